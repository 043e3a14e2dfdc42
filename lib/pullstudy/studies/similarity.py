"""Study 05: how much container images share, as Jaccard similarity of their layers, and its verdicts.

The upstream (container-chonks ``scripts/container-similarity.py``) compared every pair of images
with a double loop over DataFrame filters: quadratic in images and slow per pair. Here an image set
is a sparse 0/1 incidence matrix (images x layer digests), so every pairwise intersection comes
from one sparse product A·Aᵀ that only holds pairs sharing something; unions follow from the row
sums. That scales to thousands of images, and the summary statistics are computed from the sparse
result without ever forming the dense n x n matrix.

The same code serves both upstream measures: ``item="digest"`` on the layer table (identical layer
blobs) and ``item="content_digest"`` on the history table (identical build steps, see
:func:`pullstudy.images.oci_manifests.content_digest`).

Sets are keyed by their catalog id, or by the resolved path of a plain folder, never by a folder
name: ``container-sizes/performance-study`` and ``similarity/performance-study`` are two sets, and
a published figure is checked only against the catalog set it was published for. Tables and charts
use a short label, the shortest tail of the key that no other set shares.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.cluster import hierarchy
from scipy.special import comb

from pullstudy.data import catalog
from .claims import Verdict
from pullstudy.images.oci_manifests import ImageSet
from pullstudy.sources.archive.source import container_set

# The figures as the source published them (mean, population std over the full matrix with diagonal),
# keyed by the catalog set they describe: "study containers" are similarity/performance-study, the
# "ensemble containers" similarity/containers, the "spack containers" similarity/spack.
PUBLISHED_DIGEST_SIMILARITY: dict[str, tuple[float, float]] = {
    "similarity/containers": (0.659, 0.128),
    "similarity/performance-study": (0.4027, 0.384),
    "similarity/spack": (0.2, 0.327),
}
MEASURES = {"digest": ("layers", "digest"), "content": ("history", "content_digest")}

# Group labels that name a running environment (cloud, CPU or GPU build): needed to test that part.
ENVIRONMENT_PATTERN = re.compile(r"\b(cpu|gpu|cloud|aws|eks|gcp|gke|google|azure|aks|on-?prem)\b", re.I)


# --------------------------------------------------------------------------- the sets, keyed


@dataclass
class LoadedSet:
    """One container set as the study reads it.

    ``key`` (catalog id, or the folder's resolved path) is what claims and the upstream's outputs
    are matched on; ``label`` is unique among the sets of one study and names the set in tables;
    ``slug`` is the label made safe for file names.
    """

    key: str
    label: str
    slug: str
    ref: str
    image_set: ImageSet
    unavailable: list[str] = field(default_factory=list)
    outputs: Path | None = None

    @property
    def complete(self) -> bool:
        """Every file of the set is here and readable: only then is it the set a figure was published for."""
        return not self.unavailable and not self.image_set.problems


def _as_list(value: str | Path | Iterable, name: str) -> list:
    """A single string is one item, not its characters."""
    if isinstance(value, (str, Path)):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise ValueError(f"{name}: expected a list of names, got {type(value).__name__} {value!r}") from None


def set_key(ref: str | Path) -> str:
    """The identity of a set: its catalog id, or the resolved path of a folder of manifests."""
    if Path(ref).is_dir():
        return str(Path(ref).resolve())
    try:
        return catalog.get_set(str(ref)).id
    except KeyError as exc:
        raise ValueError(f"sets: {str(ref)!r} is neither a folder of manifests nor a catalog set "
                         f"({exc.args[0].split('; ', 1)[-1]})") from None


def unique_labels(keys: Sequence[str]) -> dict[str, str]:
    """Per key, the shortest tail of its path (``spack``, ``similarity/spack``) that no other key ends with.

    A key that is itself the tail of another keeps its whole self; the other gets a longer tail.
    Keys must be distinct (the same set listed twice is refused by :func:`load_sets`).
    """
    parts = {k: [p for p in k.replace("\\", "/").split("/") if p] or [k] for k in keys}
    labels = {}
    for key in keys:
        mine = parts[key]
        for n in range(1, len(mine) + 1):
            tail = mine[-n:]
            if not any(o != key and parts[o][-n:] == tail for o in keys):
                labels[key] = "/".join(tail)
                break
        else:
            labels[key] = key
    return labels


def _slugs(labels: Sequence[str]) -> list[str]:
    slugs, seen = [], Counter()
    for label in labels:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "set"
        seen[slug] += 1
        slugs.append(slug if seen[slug] == 1 else f"{slug}-{seen[slug]}")
    return slugs


def load_sets(refs: str | Path | Iterable[str | Path], *, raw: str | Path | None = None) -> list[LoadedSet]:
    """Read every set named by catalog id or folder, keyed as above; the same set twice is refused."""
    refs = _as_list(refs, "sets")
    if not refs:
        raise ValueError("sets: name at least one catalog set id or folder of manifests")
    keys = [set_key(r) for r in refs]
    twice = [k for k, n in Counter(keys).items() if n > 1]
    if twice:
        raise ValueError(f"sets: {', '.join(twice)} listed more than once; list each set once")
    labels = unique_labels(keys)
    out = []
    for ref, key, slug in zip(refs, keys, _slugs([labels[k] for k in keys])):
        image_set, unavailable, outputs = container_set(ref, raw=raw)
        out.append(LoadedSet(key, labels[key], slug, str(ref), image_set, list(unavailable), outputs))
    return out


def set_overview(sets: Sequence[LoadedSet]) -> str:
    """Markdown, one bullet per set: images, layers, what was left out and what is not here."""
    lines = []
    for s in sets:
        where = s.ref if s.ref == s.key else f"{s.ref}, {s.key}"
        problems = s.image_set.problems
        lines.append(f"* **{s.label}** (`{where}`): {len(s.image_set.images)} images, {len(s.image_set.layers)} layers"
                     + (f"; **left out**: " + "; ".join(f"`{w}` ({y})" for w, y in problems) if problems else "")
                     + (f"; **{len(s.unavailable)} file(s) unavailable here**" if s.unavailable else ""))
    return "\n".join(lines)


def all_layers(sets: Sequence[LoadedSet]) -> pd.DataFrame:
    """The layer tables of every set, with ``set`` the set's unique label."""
    return pd.concat([s.image_set.layers.assign(set=s.label) for s in sets], ignore_index=True)


@dataclass
class SetSummaries:
    """Per set and measure: the summary table (one row each), the digest summaries keyed by set key
    (what the similarity-sets verdict reads) and the matrices keyed by (label, measure)."""

    table: pd.DataFrame
    digest: dict[str, SimilaritySummary]
    matrices: dict[tuple[str, str], pd.DataFrame]


def summarize_sets(sets: Sequence[LoadedSet], measures: str | Iterable[str] = ("digest", "content")) -> SetSummaries:
    """Jaccard matrix and summary of every set under every measure, with the upstream's archived matrix
    compared where the set is complete here (an incomplete set is a different set of images)."""
    measures = _as_list(measures, "measures")
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"measures: {unknown} not among {', '.join(MEASURES)}")
    rows, digest, matrices = [], {}, {}
    for s in sets:
        for measure in measures:
            attribute, item = MEASURES[measure]
            matrix = jaccard_frame(getattr(s.image_set, attribute), item=item, images=s.image_set.images)
            matrices[(s.label, measure)] = matrix
            got = summary(matrix.to_numpy())
            if measure == "digest":
                digest[s.key] = got
            row = {"set": s.label, "measure": measure, "images": got.n, "mean (with diagonal)": got.mean,
                   "std (with diagonal)": got.std, "mean (distinct pairs)": got.pair_mean,
                   "std (distinct pairs)": got.pair_std}
            csv = s.outputs / UPSTREAM_MATRIX_FILES[measure] if s.outputs is not None else None
            if csv is not None and csv.is_file() and s.complete:
                row["max |ours - upstream|"] = upstream_difference(matrix, csv)
            row["set_id"] = s.key
            rows.append(row)
    return SetSummaries(pd.DataFrame(rows), digest, matrices)


def union_content(sets: Sequence[LoadedSet]) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """One build-step similarity matrix over the images of every set, the set label of each row, and
    the images found in more than one set: each such image gets one row per set (``image [label]``),
    so every set keeps all its images and the groups stay a partition."""
    counts = Counter(i for s in sets for i in s.image_set.images)
    groups, tables = {}, []
    for s in sets:
        rename = {i: f"{i} [{s.label}]" for i in s.image_set.images if counts[i] > 1}
        history = s.image_set.history
        tables.append(history.assign(image=history["image"].replace(rename)) if rename else history)
        groups.update({rename.get(i, i): s.label for i in s.image_set.images})
    history = pd.concat(tables, ignore_index=True)
    matrix = jaccard_frame(history, item="content_digest", images=list(groups))
    return matrix, groups, sorted(i for i, n in counts.items() if n > 1)


def resolve_label(sets: Sequence[LoadedSet], name: str) -> str:
    """The label of the set named by its catalog id, folder, label, the ref given or a tail of its path;
    ``name`` itself when no set matches (the verdict then reports that part not testable). A name that
    fits two sets is refused: which one the claim is about must be said."""
    exact = [s for s in sets if name in (s.key, s.label, s.ref)]
    matches = exact or [s for s in sets if s.key.endswith("/" + name.strip("/"))]
    if len(matches) > 1:
        raise ValueError(f"spack_set: {name!r} fits several sets ({', '.join(s.key for s in matches)}); "
                         "give its catalog id or full path")
    return matches[0].label if matches else name


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


DEFAULT_BLOCK_BYTES = 256 * 2**20
_BYTES_PER_ENTRY = 40  # a stored product entry: int32 index + int32 count + float64 score + int32 row, and copies


def _fold_moments(acc: tuple[int, float, float], count: int, values: np.ndarray) -> tuple[int, float, float]:
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations) with ``values`` plus
    (count - len(values)) zeros: the blocks of a summary combine without keeping any of them."""
    if count == 0:
        return acc
    values = np.asarray(values, dtype=float)
    mean = float(values.sum()) / count
    d = values - mean
    m2 = float(np.dot(d, d)) + (count - values.size) * mean * mean
    n0, mean0, m20 = acc
    total = n0 + count
    delta = mean - mean0
    return total, mean0 + delta * count / total, m20 + m2 + delta * delta * n0 * count / total


def summary_from_incidence(inc: sparse.spmatrix, *, max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> SimilaritySummary:
    """The :func:`summary` of ``jaccard(inc)`` computed in row blocks, never holding the whole matrix.

    Why: the sparse product holds every pair that shares a layer, n² entries for sets that share a base
    image: 6.6 GB at 100,000 images. Here rows are taken ``block`` at a time, with ``block`` chosen so that
    even a block whose every pair is stored fits in ``max_block_bytes``; each block's scores are folded
    into running moments (numerically stable pairwise update) and dropped. Equal to :func:`summary` up
    to floating-point summation order (tests/test_similarity.py).
    """
    if not isinstance(max_block_bytes, int) or max_block_bytes < 1:
        raise ValueError(f"max_block_bytes must be a positive number of bytes, got {max_block_bytes!r}")
    a = sparse.csr_matrix(inc, dtype=np.int32, copy=True)
    a.sum_duplicates()
    a.eliminate_zeros()
    a.data[:] = 1
    n = a.shape[0]
    sizes = np.diff(a.indptr).astype(np.int32)
    at = sparse.csr_matrix(a.T)  # CSR too: csr @ csc would convert the whole right side for every block
    block = max(1, max_block_bytes // (_BYTES_PER_ENTRY * max(n, 1)))
    full = pair = (0, 0.0, 0.0)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        inter = sparse.csr_matrix(a[lo:hi] @ at)
        inter.sum_duplicates()
        rows = np.repeat(np.arange(lo, hi, dtype=np.int32), np.diff(inter.indptr))
        union = sizes[rows] + sizes[inter.indices] - inter.data
        scores = inter.data / union
        ones = int((sizes[lo:hi] == 0).sum())  # empty images: no (i, i) entry, but a diagonal of one
        values = np.concatenate([scores, np.ones(ones)]) if ones else scores
        full = _fold_moments(full, (hi - lo) * n, values)
        upper = rows < inter.indices
        # the distinct pairs (i, j > i) of these rows: sum over rows of (n - 1 - i)
        count = int(((n - 1 - np.arange(lo, hi)).sum()))
        pair = _fold_moments(pair, count, scores[upper])
        del inter, rows, union, scores, values, upper
    pairs = n * (n - 1) // 2

    def moments(acc):
        count, mean, m2 = acc
        return (math.nan, math.nan) if count == 0 else (mean, math.sqrt(max(m2, 0.0) / count))

    mean, std = moments(full)
    pair_mean, pair_std = moments(pair)
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
                            *, tolerance: float = 0.01, incomplete: Collection[str] = ()) -> Verdict:
    """Claim similarity-sets (kind: "as given" -- figures per named set), by this rule:

    * Only the set the figure was published for is compared: ``summaries`` and ``published`` are
      keyed by catalog set id, so another set of the same folder name is never checked against it.
      A set named in ``incomplete`` (files missing or unreadable here) or without images is *not
      measured*: its matrix is of other images than the published one.
    * Each figure is a central estimate computed exactly from all images (no sampling, so no CI);
      its uncertainty is the rounding of the published figure, covered by ``tolerance``. A set's
      figures match when both |mean - published| and |std - published| are <= ``tolerance``.
    * supported: every named set measured and matching. partly supported: at least one set's mean
      matches (with stds or other sets differing or not measured, each named in the reason). not
      supported: no measured set's mean matches. not testable here: no named set measured.

    The largest |mean - published| is reported as the value; it does not decide the verdict.
    """
    def measured(name):
        got = summaries.get(name)
        return got is not None and name not in incomplete and got.n > 0 and not math.isnan(got.mean)

    tested = [s for s in published if measured(s)]
    missing = [s for s in published if not measured(s)]
    if not tested:
        return Verdict("similarity-sets", "not testable here",
                       f"none of the published sets ({', '.join(published)}) was measured complete here")
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
            missing and f"not measured (absent or incomplete here): {', '.join(missing)}"]))
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
    """Claim similarity-clusters (kind: qualitative, two parts), from a content-similarity matrix over
    the union of the sets, by this rule:

    * (a) spack builds resemble nothing else: cut the average-linkage tree into as many flat
      clusters as there are groups; the part holds when all the spack group's images fall in one
      cluster and no other image does. It is a property of the whole partition, so one image can
      break it but no single image can make it hold.
    * (b) the environments (cloud, CPU vs GPU) separate: the adjusted Rand index of the flat
      clustering of the environment groups' images (one summary of all of them) is >= ``min_ari``,
      the tolerance of "separate". It needs at least two environment groups (``environments``,
      default: labels matching ENVIRONMENT_PATTERN); without them (b) is not testable.
    * supported: both parts tested and holding. partly supported: one part holds (also when (b) is
      not testable). not supported: every tested part fails. not testable here: neither part tested.

    How well the clustering recovers all the groups (ARI, the reported value) and each spack image's
    highest similarity to a non-spack image (a per-image extreme) are reported, never judged.
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
    verdict = _combine(results)
    held = [k for k, ok in results.items() if ok]
    failed = [k for k, ok in results.items() if not ok]
    untested = [k for k in CLUSTER_PARTS if k not in results]
    reason = (f"parts that hold: {', '.join(held) or 'none'}; parts that fail: {', '.join(failed) or 'none'}"
              + "".join(f"; the {PART_NAMES[k]} is not testable with these sets" for k in untested))
    return Verdict("similarity-clusters", verdict, reason, measured="; ".join(notes), value=ari,
                   unit="adjusted Rand index", n=len(g))


CLUSTER_PARTS = ("spack", "environments")
PART_NAMES = {"spack": "spack part", "environments": "environment part"}


def _combine(results: dict[str, bool]) -> str:
    """Every part tested and holding -> supported; some part holds -> partly; none holds -> not supported."""
    if not results:
        return "not testable here"
    if all(results.values()) and all(k in results for k in CLUSTER_PARTS):
        return "supported"
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


# --------------------------------------------------------------------------- the study of notebook 05

def load_for_study(refs, out) -> tuple[list[LoadedSet], list[LoadedSet], str]:
    """Read the sets and account for them in ``out``: files not here, problems, sets with no readable image.

    Returns every set, the sets that have images (the ones analysed), and a Markdown overview. None
    readable is an error naming the remedy.
    """
    loaded_sets = load_sets(refs)
    for s in loaded_sets:
        out.metric(f"unavailable_files[{s.label}]", s.unavailable)
        for where, why in s.image_set.problems:
            out.excluded(f"{s.label}: {where}: {why}", 1)
    loaded = [s for s in loaded_sets if s.image_set.images]
    for s in loaded_sets:
        if not s.image_set.images:
            out.excluded(f"{s.label}: no readable image here, the set is left out", 1)
    if not loaded:
        raise RuntimeError(f"none of the sets {refs} has a readable image: run `make data` or check the folders")
    return loaded_sets, loaded, set_overview(loaded_sets)


def union_of_sets(loaded: Sequence[LoadedSet], out) -> tuple[pd.DataFrame, dict[str, str], str]:
    """The build-step matrix over all sets' images, each image's set, and a note on images in several sets."""
    union, groups, shared = union_content(loaded)
    out.metric("images_in_several_sets", shared)
    note = (f"**{len(shared)} image(s) belong to more than one set**; each keeps one row per set (`image [set]`): "
            + ", ".join(f"`{i}`" for i in shared[:10]) + (" …" if len(shared) > 10 else "")) if shared else ""
    return union, groups, note


def verdicts(loaded_sets: Sequence[LoadedSet], loaded: Sequence[LoadedSet], summaries: SetSummaries,
             union: pd.DataFrame, groups: Mapping[str, str], *, spack_set: str, tolerance: float, out) -> list[str]:
    """Both claims of study 05, recorded in ``out``; one Markdown line each."""
    incomplete = [s.key for s in loaded_sets if not s.complete]
    found = [out.verdict(verdict_similarity_sets(summaries.digest, tolerance=tolerance, incomplete=incomplete)),
             out.verdict(verdict_similarity_clusters(union, groups, spack_group=resolve_label(loaded, spack_set)))]
    return [f"**{v.claim_id}: {v.verdict}** — {v.reason}. *Measured:* {v.measured}." for v in found]
