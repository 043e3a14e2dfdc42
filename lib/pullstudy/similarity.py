"""Study 05: how much container images share, as Jaccard similarity of their layers, and its verdicts.

The upstream (container-chonks ``scripts/container-similarity.py``) compared every pair of images
with a double loop over DataFrame filters: quadratic in images and slow per pair. Here an image set
is a sparse 0/1 incidence matrix (images x layer digests), so every pairwise intersection comes
from one sparse product A·Aᵀ that only holds pairs sharing something; unions follow from the row
sums. That scales to thousands of images, and the summary statistics are computed from the sparse
result without ever forming the dense n x n matrix.

The same code serves both upstream measures: ``item="digest"`` on the layer table (identical layer
blobs) and ``item="content_digest"`` on the history table (identical build steps, see
:func:`pullstudy.manifests.content_digest`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.cluster import hierarchy
from scipy.special import comb

from .claims import Verdict

# The figures as the source published them (mean, population std over the full matrix with diagonal).
PUBLISHED_DIGEST_SIMILARITY: dict[str, tuple[float, float]] = {
    "containers": (0.659, 0.128),
    "performance-study": (0.4027, 0.384),
    "spack": (0.2, 0.327),
}

# Group labels that name a running environment (cloud, CPU or GPU build): needed to test that part.
ENVIRONMENT_PATTERN = re.compile(r"\b(cpu|gpu|cloud|aws|eks|gcp|gke|google|azure|aks|on-?prem)\b", re.I)


# --------------------------------------------------------------------------- incidence and Jaccard


def incidence(table: pd.DataFrame, item: str = "digest", image: str = "image",
              images: Sequence[str] | None = None) -> tuple[sparse.csr_matrix, list[str], list[str]]:
    """Binary images x items matrix; an item listed twice in one image counts once, as in a set.

    ``images`` fixes the row order and may name images without any row (or with a missing item):
    they get an empty row rather than disappearing, so matrices of two measures stay aligned.
    Without it the rows follow the order of first appearance in ``table``.
    """
    rows = table[[image, item]]
    names = list(dict.fromkeys(rows[image])) if images is None else list(images)
    if len(set(names)) != len(names):
        raise ValueError("images must be unique")
    unknown = set(rows[image]) - set(names)
    if unknown:
        raise ValueError(f"{len(unknown)} images in the table are not in `images`, e.g. {sorted(unknown)[:3]}")
    rows = rows.dropna(subset=[item])
    items = list(dict.fromkeys(rows[item]))
    r = pd.Index(names).get_indexer(rows[image])
    c = pd.Index(items).get_indexer(rows[item])
    ones = np.ones(len(rows), dtype=np.int32)
    inc = sparse.csr_matrix((ones, (r, c)), shape=(len(names), len(items)))
    inc.sum_duplicates()
    inc.data[:] = 1  # duplicates within an image: a set, not a multiset
    return inc, names, items


def jaccard(inc: sparse.spmatrix) -> sparse.csr_matrix:
    """|A∩B| / |A∪B| for every pair of rows, kept sparse: only pairs that share an item are stored.

    The diagonal is 1 for every image (the upstream set a == b to 1), even an empty one; two
    distinct empty images share nothing and score 0 (the upstream would have divided by zero).
    Worked in place on the product's own arrays, so the peak stays a few times the result's size.
    """
    a = sparse.csr_matrix(inc, dtype=np.int32, copy=True)
    a.sum_duplicates()
    a.eliminate_zeros()
    a.data[:] = 1
    sizes = np.diff(a.indptr).astype(np.int32)
    inter = sparse.csr_matrix(a @ a.T)  # int32 counts of shared items; row i holds (i, i) = sizes[i]
    inter.sum_duplicates()  # canonical: sorted indices, so summary() can trust it without a copy
    rows = np.repeat(np.arange(a.shape[0], dtype=np.int32), np.diff(inter.indptr))
    union = sizes[rows]
    del rows
    union += sizes[inter.indices]
    union -= inter.data
    sim = sparse.csr_matrix((inter.data / union, inter.indices, inter.indptr), shape=inter.shape)
    empty = sizes == 0  # no item, so no (i, i) entry in the product
    if empty.any():
        sim = sparse.csr_matrix(sim + sparse.diags(empty.astype(float)))
        sim.sum_duplicates()
    return sim


def jaccard_frame(table: pd.DataFrame, item: str = "digest", image: str = "image",
                  images: Sequence[str] | None = None) -> pd.DataFrame:
    """Dense image x image Jaccard matrix with names: for the notebook's small sets and heatmaps."""
    inc, names, _ = incidence(table, item=item, image=image, images=images)
    return pd.DataFrame(jaccard(inc).toarray(), index=names, columns=names)


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class SimilaritySummary:
    """Mean and population std of a similarity matrix, two ways.

    ``mean``/``std`` are over the full n x n matrix with its diagonal of ones, as the source
    published them (numpy.mean / numpy.std); its n ones on the diagonal pull the mean up (for
    spack 0.2 against 0.067), so ``pair_mean``/``pair_std`` give the same over the n(n-1)/2
    distinct pairs only (upper triangle, no diagonal).
    """

    mean: float
    std: float
    pair_mean: float
    pair_std: float
    n: int
    n_pairs: int


def _moments(values: np.ndarray, count: int) -> tuple[float, float]:
    """Mean and population std of ``count`` numbers: ``values`` plus (count - len(values)) zeros."""
    if count == 0:
        return math.nan, math.nan
    values = np.asarray(values, dtype=float)
    mean = float(values.sum()) / count
    deviations = values - mean
    squares = float(np.dot(deviations, deviations)) + (count - values.size) * mean * mean
    return mean, math.sqrt(max(squares, 0.0) / count)


def summary(sim: sparse.spmatrix | np.ndarray | pd.DataFrame, n: int | None = None) -> SimilaritySummary:
    """Summary statistics straight from the stored entries of a symmetric matrix, never densified.

    Entries not stored are zeros; ``n`` (default: the matrix's size) is the number of images.
    """
    if isinstance(sim, pd.DataFrame):
        sim = sim.to_numpy(dtype=float)
    m = sparse.csr_matrix(sim)  # no copy for a CSR input
    if not m.has_canonical_format:  # duplicates would be counted twice
        m = m.copy()
        m.sum_duplicates()
    n = m.shape[0] if n is None else int(n)
    if m.shape != (n, n):
        raise ValueError(f"matrix of shape {m.shape} is not {n} x {n}")
    mean, std = _moments(m.data, n * n)
    rows = np.repeat(np.arange(n, dtype=m.indices.dtype), np.diff(m.indptr))
    pairs = n * (n - 1) // 2
    pair_mean, pair_std = _moments(m.data[rows < m.indices], pairs)
    return SimilaritySummary(mean, std, pair_mean, pair_std, n, pairs)


# --------------------------------------------------------------------------- clustering


def _linkage(matrix: pd.DataFrame) -> np.ndarray:
    """What seaborn.clustermap computes: average linkage, euclidean distance between rows, no reordering."""
    return hierarchy.linkage(matrix.to_numpy(dtype=float), method="average", metric="euclidean",
                             optimal_ordering=False)


def cluster_order(matrix: pd.DataFrame) -> list[str]:
    """Leaf order of the row dendrogram, as clustermap's ``dendrogram_row.reordered_ind`` gives it."""
    if len(matrix) < 2:
        return list(matrix.index)
    leaves = hierarchy.dendrogram(_linkage(matrix), no_plot=True, color_threshold=-np.inf)["leaves"]
    return [matrix.index[i] for i in leaves]


def cluster_labels(matrix: pd.DataFrame, k: int) -> pd.Series:
    """Flat clusters (1..k) from cutting the same tree into at most k groups."""
    if len(matrix) < 2:
        return pd.Series(np.ones(len(matrix), dtype=int), index=matrix.index, name="cluster")
    labels = hierarchy.fcluster(_linkage(matrix), t=k, criterion="maxclust")
    return pd.Series(labels, index=matrix.index, name="cluster")


def adjusted_rand_index(truth: Sequence, found: Sequence) -> float:
    """Hubert-Arabie adjusted Rand index: 1 = same partition, ~0 = chance, may be negative.

    As in scikit-learn (not installed here), two partitions with no pairs to disagree about (both
    one cluster, or both all singletons) score 1.
    """
    truth, found = np.asarray(truth), np.asarray(found)
    if truth.shape != found.shape or truth.ndim != 1:
        raise ValueError("truth and found must be 1-D and of the same length")
    n = truth.size
    _, t = np.unique(truth, return_inverse=True)
    _, f = np.unique(found, return_inverse=True)
    table = np.zeros((t.max(initial=-1) + 1, f.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (t, f), 1)
    index = comb(table, 2).sum()
    rows, cols = comb(table.sum(axis=1), 2).sum(), comb(table.sum(axis=0), 2).sum()
    expected = rows * cols / comb(n, 2) if n > 1 else 0.0
    top = (rows + cols) / 2
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


# --------------------------------------------------------------------------- layer statistics


def layer_stats(layers: pd.DataFrame) -> pd.DataFrame:
    """Per set, what sharing saves: a node pulling every image pulls each unique digest only once."""
    rows = []
    for name, g in layers.groupby("set", sort=False):
        unique = g.drop_duplicates("digest")
        without, with_ = int(g["size"].sum()), int(unique["size"].sum())
        rows.append({
            "set": name, "images": g["image"].nunique(), "layers": len(g), "unique_layers": len(unique),
            "unique_share": len(unique) / len(g) if len(g) else math.nan,
            "bytes_without_sharing": without, "bytes_with_sharing": with_,
            "bytes_saved": without - with_, "saved_fraction": (without - with_) / without if without else math.nan,
        })
    return pd.DataFrame(rows)


def layer_size_table(layers: pd.DataFrame) -> pd.DataFrame:
    """One row per unique layer of each set, with its size and how many images use it (histogram input)."""
    used = layers.groupby(["set", "digest"], sort=False)["image"].nunique().rename("images")
    unique = layers.drop_duplicates(["set", "digest"])[["set", "digest", "size"]]
    return unique.merge(used.reset_index(), on=["set", "digest"]).reset_index(drop=True)


# --------------------------------------------------------------------------- verdicts


def verdict_similarity_sets(summaries: Mapping[str, SimilaritySummary],
                            published: Mapping[str, tuple[float, float]] = PUBLISHED_DIGEST_SIMILARITY,
                            *, tolerance: float = 0.01) -> Verdict:
    """Claim similarity-sets: each set's full-matrix mean and std against the published, to ``tolerance``."""
    tested = [s for s in published if s in summaries]
    missing = [s for s in published if s not in summaries]
    if not tested:
        return Verdict("similarity-sets", "not testable here",
                       f"none of the published sets ({', '.join(published)}) was measured")
    parts, mean_ok, std_ok = [], {}, {}
    for name in tested:
        got, (p_mean, p_std) = summaries[name], published[name]
        mean_ok[name] = abs(got.mean - p_mean) <= tolerance
        std_ok[name] = abs(got.std - p_std) <= tolerance
        parts.append(f"{name}: mean {got.mean:.4f} vs {p_mean} ({'ok' if mean_ok[name] else 'differs'}), "
                     f"std {got.std:.4f} vs {p_std} ({'ok' if std_ok[name] else 'differs'}); "
                     f"distinct pairs {got.pair_mean:.4f} ± {got.pair_std:.4f}, n={got.n}")
    full = [s for s in tested if mean_ok[s] and std_ok[s]]
    means = [s for s in tested if mean_ok[s]]
    if len(full) == len(tested) and not missing:
        verdict, why = "supported", f"every set's mean and std match the published to ±{tolerance}"
    elif means:
        bad_std = [s for s in means if not std_ok[s]]
        bad_mean = [s for s in tested if not mean_ok[s]]
        why = "; ".join(filter(None, [
            f"means match for {', '.join(means)}",
            bad_mean and f"means differ for {', '.join(bad_mean)}",
            bad_std and f"stds differ for {', '.join(bad_std)}",
            missing and f"not measured: {', '.join(missing)}"]))
        verdict = "partly supported"
    else:
        verdict, why = "not supported", f"no set's mean matches the published to ±{tolerance}"
    worst = max(abs(summaries[s].mean - published[s][0]) for s in tested)
    return Verdict("similarity-sets", verdict, f"{why} (full matrix with diagonal, population std)",
                   measured="; ".join(parts), value=worst, unit="largest |mean - published|",
                   n=sum(summaries[s].n for s in tested))


def environment_groups(labels: Iterable[str]) -> list[str]:
    """Group labels that name an environment (cloud, CPU, GPU), which the environment part needs."""
    return sorted({g for g in labels if ENVIRONMENT_PATTERN.search(str(g).replace("_", " "))})


def _spack_isolation(matrix: pd.DataFrame, groups: pd.Series, spack_group: str) -> pd.Series:
    """For each spack image, its highest content similarity to any image outside the spack group."""
    spack = groups.index[groups == spack_group]
    others = groups.index[groups != spack_group]
    return matrix.loc[spack, others].max(axis=1)


def _recovery(matrix: pd.DataFrame, groups: pd.Series) -> float:
    """ARI between the given groups and flat clusters cut at k = number of groups."""
    found = cluster_labels(matrix, groups.nunique())
    return adjusted_rand_index(groups.to_numpy(), found.loc[groups.index].to_numpy())


def verdict_similarity_clusters(content: pd.DataFrame, groups: Mapping[str, str], *, spack_group: str = "spack",
                                environments: Collection[str] | None = None, min_ari: float = 0.9) -> Verdict:
    """Claim similarity-clusters, from a content-similarity matrix over the union of the sets.

    Two parts, as the claim states them: (a) spack builds resemble nothing else -- cut into as many
    flat clusters as there are groups, the spack images form a cluster of their own, with no other
    image in it; (b) the environments (cloud, CPU vs GPU) separate (adjusted Rand index of the flat
    clustering of the environment groups' images >= ``min_ari``). (b) needs at least two environment
    groups (``environments``, default: labels matching ENVIRONMENT_PATTERN); without them it is not
    testable and the verdict is at most "partly supported". How well the clustering recovers all the
    groups (ARI) and each spack image's highest similarity to another image are reported, not judged.
    """
    g = pd.Series(dict(groups), name="group")
    missing = g.index.difference(content.index)
    if len(missing):
        raise ValueError(f"{len(missing)} grouped images are not in the matrix, e.g. {list(missing)[:3]}")
    m = content.loc[g.index, g.index]
    results, notes = {}, []
    ari = math.nan
    if g.nunique() >= 2:
        clusters = cluster_labels(m, g.nunique()).loc[g.index]
        ari = adjusted_rand_index(g.to_numpy(), clusters.to_numpy())
        notes.append(f"flat clustering k={g.nunique()} against the groups: ARI {ari:.3f}")
        if (g == spack_group).any():
            spack_clusters = set(clusters[g == spack_group])
            intruders = sorted(g.index[(g != spack_group) & clusters.isin(spack_clusters)])
            results["spack"] = len(spack_clusters) == 1 and not intruders
            peak = _spack_isolation(m, g, spack_group)
            notes.append(f"spack images in {len(spack_clusters)} cluster(s), shared with {len(intruders)} other "
                         f"image(s); their highest content similarity to a non-spack image: {peak.max():.3f}")
    if "spack" not in results:
        notes.append(f"spack part not testable: no {spack_group!r} images or nothing to compare them to")
    envs = list(environments) if environments is not None else environment_groups(g.unique())
    envs = [e for e in envs if (g == e).any()]
    if len(envs) >= 2:
        sub = g[g.isin(envs)]
        env_ari = _recovery(m.loc[sub.index, sub.index], sub)
        results["environments"] = env_ari >= min_ari
        notes.append(f"environments {', '.join(envs)}: ARI {env_ari:.3f} (needs >= {min_ari})")
    else:
        notes.append("environment part (cloud, CPU vs GPU) not testable with these sets: "
                     f"the groups ({', '.join(map(str, g.unique()))}) are not environments")
    verdict = _combine(results, environments_tested="environments" in results)
    held = [k for k, ok in results.items() if ok]
    failed = [k for k, ok in results.items() if not ok]
    reason = (f"parts that hold: {', '.join(held) or 'none'}; parts that fail: {', '.join(failed) or 'none'}"
              + ("" if "environments" in results else "; the environment part is not testable with these sets"))
    return Verdict("similarity-clusters", verdict, reason, measured="; ".join(notes), value=ari,
                   unit="adjusted Rand index", n=len(g))


def _combine(results: dict[str, bool], *, environments_tested: bool) -> str:
    """All parts hold -> supported (only if the environment part was tested); none -> not supported."""
    if not results:
        return "not testable here"
    if all(results.values()):
        return "supported" if environments_tested else "partly supported"
    return "partly supported" if any(results.values()) else "not supported"


UPSTREAM_MATRIX_FILES = {"digest": "container-similarity-similarity.csv",
                         "content": "container-layer-content-similarity-similarity.csv"}


def upstream_difference(matrix: pd.DataFrame, csv_path: str | Path) -> float:
    """Largest absolute difference between our matrix and the upstream's archived one, aligned by name."""
    theirs = pd.read_csv(csv_path, index_col=0)
    ours_names, their_names = set(matrix.index), set(theirs.index)
    if ours_names != their_names:
        raise ValueError(f"{csv_path}: images differ from ours (only upstream: {sorted(their_names - ours_names)[:3]}, "
                         f"only ours: {sorted(ours_names - their_names)[:3]})")
    theirs = theirs.loc[matrix.index, list(matrix.index)].astype(float)
    return float(np.abs(theirs.to_numpy() - matrix.to_numpy(dtype=float)).max())
