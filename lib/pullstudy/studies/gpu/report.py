"""The report card (layer × check × status × evidence × remedy), its charts, and the claim's verdict.

The verdict on ``gpu-usernetes`` is computed from the live checks only: the claim is about rootless
Usernetes, and the archived clusters are cloud-managed (GKE, EKS, AKS), so they can show how GPU
nodes look but cannot test it. Without a GPU and a cluster here, the verdict says so, with the
reasons the layers gave.
"""

from __future__ import annotations

import re
from typing import Iterable

import altair as alt
import pandas as pd

from pullstudy.studies.claims import Verdict
from . import kube, usernetes_node
from .checks import ARCHIVE, HOST, KUBE, LAYERS, LIVE_LAYERS, NODE, RUNTIME, STATUSES, Check
from .host import GPUS

CARD_COLUMNS = ["layer", "check", "status", "evidence", "remedy"]
STATUS_COLORS = {"pass": "#1a9850", "fail": "#d73027", "skip": "#b0b0b0"}
#: The steps the claim says GPUs need, and the checks that see each one (layer, check name).
STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "nvidia runtime in rootless Docker, from the daemon config it reads": (
        (RUNTIME, "nvidia runtime registered in Docker"), (RUNTIME, "Docker runs rootless"),
        (RUNTIME, "the daemon config dockerd reads names nvidia")),
    "CDI spec generated on the host": ((RUNTIME, "CDI spec for nvidia.com/gpu on the host"),),
    "CDI spec generated again inside the node": ((NODE, usernetes_node.CDI),),
    "device char symlinks created in advance": (
        (RUNTIME, "/dev/char symlinks to the NVIDIA devices on the host"), (NODE, usernetes_node.DEV_CHAR)),
    "containerd inside the node configured for CDI": ((NODE, usernetes_node.CONTAINERD),),
    "the plain NVIDIA device plugin, not the GPU Operator": ((KUBE, kube.PLUGIN), (KUBE, kube.OPERATOR)),
    "no-cgroups not set (cgroups needed later)": ((RUNTIME, "no-cgroups not set on the host"), (NODE, usernetes_node.NO_CGROUPS)),
}


def report_card(checks: Iterable[Check]) -> pd.DataFrame:
    """The checks as a table, layers in order from the host up, archive last."""
    card = pd.DataFrame([{"layer": c.layer, "check": c.name, "status": c.status, "evidence": c.evidence,
                          "remedy": c.remedy} for c in checks], columns=CARD_COLUMNS)
    order = {layer: i for i, layer in enumerate(LAYERS)}
    card["_order"] = card["layer"].map(order)
    return card.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def status_counts(card: pd.DataFrame) -> pd.DataFrame:
    """Checks per layer and status (every status a column, zeros included)."""
    counts = card.groupby(["layer", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0)
    return counts.reindex([layer for layer in LAYERS if layer in counts.index]).reset_index()


# ---------------------------------------------------------------- verdict


def _lookup(card: pd.DataFrame, layer: str, name: str) -> str:
    hit = card[(card["layer"] == layer) & (card["check"] == name)]
    return hit["status"].iloc[0] if len(hit) else "skip"


def step_status(card: pd.DataFrame) -> pd.DataFrame:
    """Each claimed step: pass if all its checks pass, fail if any fails, otherwise skip (not seen)."""
    rows = []
    for step, needed in STEPS.items():
        statuses = [_lookup(card, layer, name) for layer, name in needed]
        status = "fail" if "fail" in statuses else ("pass" if all(s == "pass" for s in statuses) else "skip")
        rows.append({"step": step, "status": status, "checks": ", ".join(n for _, n in needed)})
    return pd.DataFrame(rows)


def _skip_reason(card: pd.DataFrame, layer: str, name: str) -> str:
    hit = card[(card["layer"] == layer) & (card["check"] == name)]
    return hit["evidence"].iloc[0] if len(hit) else "not run"


def gpu_usernetes_verdict(card: pd.DataFrame) -> Verdict:
    """Computed from the live layers: the claimed steps present or not, and whether a GPU pod saw its GPUs."""
    steps = step_status(card)
    present = int((steps["status"] == "pass").sum())
    missing = steps.loc[steps["status"] == "fail", "step"].tolist()
    unseen = steps.loc[steps["status"] == "skip", "step"].tolist()
    outcome = _lookup(card, KUBE, kube.POD)
    measured = (f"{present} of {len(steps)} claimed steps seen in place, {len(missing)} missing, "
                f"{len(unseen)} not checked; GPU pod: {outcome}")
    common = dict(claim_id="gpu-usernetes", measured=measured, unit="steps in place", n=len(steps))
    host, cluster = _lookup(card, HOST, GPUS), _lookup(card, KUBE, kube.ALLOC)
    if host == "skip" and cluster == "skip":
        return Verdict(verdict="not testable here", value=None, reason=(
            f"the live layers were skipped on this machine — host: {_skip_reason(card, HOST, GPUS)}; "
            f"kubernetes: {_skip_reason(card, KUBE, kube.ALLOC)}. The archived GPU clusters are cloud-managed "
            "(GKE, EKS, AKS), not rootless Usernetes, so they cannot test the claim"), **common)
    return Verdict(**_judge(outcome, missing, unseen, cluster), value=present, **common)


def _judge(outcome: str, missing: list[str], unseen: list[str], cluster: str) -> dict[str, str]:
    gaps = f"missing: {', '.join(missing)}" if missing else ""
    unchecked = f"not checked: {', '.join(unseen)}" if unseen else ""
    detail = "; ".join(x for x in (gaps, unchecked) if x)
    if outcome == "skip":
        if not missing and not unseen and cluster == "pass":
            return {"verdict": "partly supported", "reason": "every claimed step is in place and the nodes "
                    "advertise their GPUs, but no GPU pod was run (run_workload_pod=False)"}
        return {"verdict": "not testable here", "reason": f"no GPU pod was run, so whether GPUs work is not known; {detail}"}
    if outcome == "pass":
        if not missing and not unseen:
            return {"verdict": "supported", "reason": "every claimed step is in place and a GPU pod saw its GPUs"}
        return {"verdict": "partly supported", "reason": f"a GPU pod saw its GPUs, although ({detail}): "
                "those steps were not needed here or were not seen"}
    if missing:
        return {"verdict": "partly supported", "reason": f"the GPU pod did not see its GPUs with steps {detail}: "
                "consistent with the claim that they are needed, though the cause is not isolated"}
    return {"verdict": "not supported", "reason": f"every claimed step checked is in place{'; ' + detail if detail else ''}, "
            "yet the GPU pod did not see its GPUs"}


# ---------------------------------------------------------------- charts


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _card_rows(card: pd.DataFrame) -> pd.DataFrame:
    """Live checks one row each; archive checks folded to one row per cluster (its worst status)."""
    live = card[card["layer"].isin(LIVE_LAYERS)].assign(label=lambda d: d["check"])
    archive = card[card["layer"] == ARCHIVE].copy()
    if not archive.empty:
        archive["label"] = archive["check"].str.split(": ", n=1).str[0]
        rank = {"fail": 0, "pass": 1, "skip": 2}
        archive = (archive.assign(_r=archive["status"].map(rank)).sort_values("_r")
                   .groupby("label", sort=False)
                   .agg(layer=("layer", "first"), status=("status", "first"),
                        evidence=("evidence", " | ".join), remedy=("remedy", "first"))
                   .reset_index())
        archive = archive.iloc[sorted(range(len(archive)), key=lambda i: _natural(archive["label"].iloc[i]))]
    rows = pd.concat([live, archive], ignore_index=True)
    return rows[["layer", "label", "status", "evidence", "remedy"]]


def _card_subtitle(rows: pd.DataFrame) -> str:
    live, archive = rows[rows["layer"] != ARCHIVE], rows[rows["layer"] == ARCHIVE]
    text = "live checks: " + ", ".join(f"{(live['status'] == s).sum()} {s}" for s in STATUSES)
    if len(archive):
        text += f" · archived clusters: {(archive['status'] == 'pass').sum()} pass, {(archive['status'] == 'fail').sum()} fail"
    return text


def report_card_chart(card: pd.DataFrame, title: str = "GPU Usernetes check — report card") -> alt.FacetChart:
    """One row per check, a coloured mark in its status column, one panel per layer (host at the top)."""
    rows = _card_rows(card)
    layers = [layer for layer in LAYERS if layer in set(rows["layer"])]
    subtitle = _card_subtitle(rows)
    base = alt.Chart(rows).encode(
        y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=460, labelFontSize=12)),
        x=alt.X("status:N", scale=alt.Scale(domain=list(STATUSES)), title=None,
                axis=alt.Axis(orient="top", labelAngle=0, labelFontSize=13)),
        tooltip=["layer:N", alt.Tooltip("label:N", title="check"), "status:N", "evidence:N", "remedy:N"],
    )
    marks = base.mark_square(size=190, opacity=0.95).encode(
        color=alt.Color("status:N", scale=alt.Scale(domain=list(STATUS_COLORS), range=list(STATUS_COLORS.values())),
                        legend=None))
    return alt.layer(marks).properties(width=150, height=alt.Step(22)).facet(
        row=alt.Row("layer:N", sort=layers, title=None,
                    header=alt.Header(labelAngle=0, labelAlign="left", labelAnchor="end", labelBaseline="top", labelFontWeight="bold",
                                      labelFontSize=13, labelOrient="left", labelPadding=12, labelLimit=150)),
        spacing=10, title=alt.Title(title, subtitle=subtitle),
    ).resolve_scale(y="independent")


def archive_chart(nodes: pd.DataFrame, title: str = "GPUs per node in the archived GPU clusters") -> alt.LayerChart:
    """Per archived cluster, its GPU nodes by allocatable GPUs; degraded nodes in red, counted at the bar's end."""
    gpu = nodes[nodes["gpu_node"]].copy()
    gpu["allocatable"] = gpu["gpu_allocatable"].fillna(0).astype(int)
    gpu["state"] = gpu.apply(lambda r: f"{r.allocatable} GPUs" + (" — degraded" if r.degraded else ""), axis=1)
    bars = (gpu.groupby(["cluster", "provider", "state", "allocatable", "degraded"], as_index=False)
            .agg(nodes=("node", "size"), expected=("expected_gpus", "max")))
    order = sorted(bars["cluster"].unique(), key=lambda c: (str(bars.loc[bars.cluster == c, "provider"].iloc[0]),
                                                            _natural(c)))
    ok = sorted(bars.loc[~bars.degraded, "state"].unique(), key=_natural, reverse=True)
    bad = sorted(bars.loc[bars.degraded, "state"].unique(), key=_natural, reverse=True)
    colors = ["#08519c", "#6baed6", "#c6dbef"][: len(ok)] + ["#cb181d", "#fb6a4a", "#fcbba1"][: len(bad)]
    totals = gpu.groupby("cluster", as_index=False).agg(nodes=("node", "size"), degraded=("degraded", "sum"))
    totals["note"] = totals.apply(lambda r: f"{int(r.degraded)} of {r.nodes} degraded" if r.degraded else "all as expected",
                                  axis=1)
    y = alt.Y("cluster:N", sort=order, title=None, axis=alt.Axis(labelLimit=300))
    stack = alt.Chart(bars).mark_bar(height=14).encode(
        y=y, x=alt.X("sum(nodes):Q", title="GPU nodes in the node list", stack="zero"),
        color=alt.Color("state:N", scale=alt.Scale(domain=ok + bad, range=colors),
                        title="allocatable GPUs per node", legend=alt.Legend(orient="bottom", columns=3, titleLimit=300)),
        order=alt.Order("allocatable:Q", sort="descending"),
        tooltip=["cluster:N", "provider:N", "state:N", "nodes:Q", alt.Tooltip("expected:Q", title="expected per node")])
    labels = alt.Chart(totals).mark_text(align="left", dx=6, fontSize=12).encode(
        y=y, x="nodes:Q", text="note:N",
        color=alt.condition("datum.degraded > 0", alt.value("#cb181d"), alt.value("#555555")))
    subtitle = "one bar per archived `kubectl get nodes` file; red: allocatable below capacity or the instance type's count"
    return alt.layer(stack, labels).properties(width=460, height=alt.Step(22),
                                               title=alt.Title(title, subtitle=subtitle))
