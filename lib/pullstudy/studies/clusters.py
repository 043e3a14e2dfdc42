"""Which cluster of a run each pull ran on: a run may hold several clusters of one size (a first
attempt and a re-run, each in its own event file), and pooling them would turn the hours between
attempts into spread.

Used by the selection of pulls (:mod:`pullstudy.studies.pulls`) and the scale study alike, so it
sits below both.
"""
from __future__ import annotations

import re

import pandas as pd
_SOURCE_FILE = re.compile(r"^(?P<file>.*?)(?::\d+|#items\[\d+\])$")


# --------------------------------------------------------------------------- cluster instances


def source_file(source: pd.Series) -> pd.Series:
    """The event file a record came from (``source`` without its ``:line`` or ``#items[i]``)."""
    return source.astype("string").str.replace(_SOURCE_FILE, r"\g<file>", regex=True)


def cluster_instances(pulls: pd.DataFrame) -> pd.Series:
    """Which cluster (1, 2, ... by start time) of a run and size each pull ran on.

    A run may hold several clusters of one size (a first attempt and a re-run, each in its own event
    file). Pooling them would turn the hours between attempts into "spread". Event files that share
    a node name belong to one cluster; files with disjoint nodes are separate clusters.
    """
    files = source_file(pulls["source"]).fillna("")
    labels = pd.Series(1, index=pulls.index, dtype="int64")
    for _, g in pulls.groupby(["run", "cluster_nodes"], dropna=False, sort=False):
        parent = {f: f for f in files[g.index].unique()}

        def find(f):
            while parent[f] != f:
                parent[f] = parent[parent[f]]
                f = parent[f]
            return f

        owner: dict[str, str] = {}
        for f, node in zip(files[g.index], g["node"].astype("string").fillna("")):
            if node and node in owner:
                parent[find(f)] = find(owner[node])
            elif node:
                owner[node] = f
        root = files[g.index].map(find)
        first = g["pulled_at"].groupby(root).min().sort_values(kind="stable")
        order = {r: i + 1 for i, r in enumerate(first.index)}
        labels[g.index] = root.map(order).astype("int64")
    return labels
