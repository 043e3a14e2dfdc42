"""Study 05: Jaccard similarity of image layers, checked by hand, against a naive reference, and
against the upstream's own archived outputs (matrices, clustering orders, published means/stds)."""

import itertools
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from pullstudy.studies import similarity as S
from pullstudy.images.oci_manifests import read_set

SIM = "container-chonks/experiments/similarity/data"
SETS = ("containers", "performance-study", "spack")
DIGEST_CSV, CONTENT_CSV = "container-similarity", "container-layer-content-similarity"


def table(images: dict[str, list]) -> pd.DataFrame:
    return pd.DataFrame([(i, d) for i, ds in images.items() for d in ds], columns=["image", "digest"])


def naive(images: dict[str, list]) -> pd.DataFrame:
    """The upstream's way, on Python sets: one pair at a time."""
    names = list(images)
    out = pd.DataFrame(0.0, index=names, columns=names)
    for a, b in itertools.product(names, names):
        sa, sb = set(images[a]), set(images[b])
        out.loc[a, b] = 1.0 if a == b else (len(sa & sb) / len(sa | sb) if sa | sb else 0.0)
    return out


# --------------------------------------------------------------------------- hand-made tables


def test_known_jaccard_with_duplicates_identical_and_empty_images():
    t = table({"a": ["x", "y", "x"], "b": ["y", "z"], "c": ["y", "x"]})
    t = pd.concat([t, pd.DataFrame({"image": ["e"], "digest": [None]})])  # an image whose layer is unknown
    m = S.jaccard_frame(t, images=["a", "b", "c", "d", "e"])  # d: no rows at all
    expected = np.array([
        [1, 1 / 3, 1, 0, 0],
        [1 / 3, 1, 1 / 3, 0, 0],
        [1, 1 / 3, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ])
    np.testing.assert_allclose(m.to_numpy(), expected, atol=1e-15)
    assert list(m.index) == list(m.columns) == ["a", "b", "c", "d", "e"]


def test_incidence_counts_a_repeated_digest_once_and_keeps_first_appearance_order():
    inc, images, items = S.incidence(table({"b": ["x", "x", "y"], "a": ["y"]}))
    assert images == ["b", "a"] and items == ["x", "y"]
    assert inc.toarray().tolist() == [[1, 1], [0, 1]]


def test_incidence_refuses_images_missing_from_the_given_order():
    with pytest.raises(ValueError, match="not in `images`"):
        S.incidence(table({"a": ["x"], "b": ["y"]}), images=["a"])


def test_jaccard_stays_sparse_for_images_that_share_nothing():
    inc, _, _ = S.incidence(table({"a": ["x"], "b": ["y"], "c": ["z", "x"]}))
    sim = S.jaccard(inc)
    assert sparse.issparse(sim) and sim.nnz == 3 + 2  # diagonal + the one sharing pair, both ways
    assert sim[0, 2] == sim[2, 0] == 0.5


def test_jaccard_ignores_explicit_zeros_and_counts_in_the_incidence():
    inc = sparse.csr_matrix((np.array([2, 0, 1, 1]), (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]))), shape=(2, 2))
    np.testing.assert_array_equal(S.jaccard(inc).toarray(), [[1, 0.5], [0.5, 1]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_jaccard_equals_the_naive_pairwise_sets(seed):
    rng = np.random.default_rng(seed)
    images = {f"img{i}": list(rng.choice(40, size=rng.integers(0, 12))) for i in range(60)}
    images["twin"] = list(images["img0"])
    t = table(images)
    ours = S.jaccard_frame(t, images=list(images))
    pd.testing.assert_frame_equal(ours, naive(images), check_exact=False, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- summary


def test_summary_with_and_without_the_diagonal_on_a_known_matrix():
    m = np.array([[1, 0.5, 0], [0.5, 1, 0.2], [0, 0.2, 1]])
    s = S.summary(sparse.csr_matrix(m))
    assert s.mean == pytest.approx(4.4 / 9) and s.std == pytest.approx(np.std(m))
    assert s.pair_mean == pytest.approx(0.7 / 3) and s.pair_std == pytest.approx(np.std([0.5, 0, 0.2]))
    assert (s.n, s.n_pairs) == (3, 3)
    assert S.summary(m) == S.summary(pd.DataFrame(m))  # dense input, same numbers


def test_summary_from_sparse_equals_numpy_on_the_dense_matrix():
    rng = np.random.default_rng(5)
    images = {f"i{k}": list(rng.choice(300, size=8)) for k in range(150)}
    inc, _, _ = S.incidence(table(images))
    sim = S.jaccard(inc)
    dense = sim.toarray()
    s = S.summary(sim)
    upper = dense[np.triu_indices(150, k=1)]
    assert s.mean == pytest.approx(dense.mean(), abs=1e-12) and s.std == pytest.approx(dense.std(), abs=1e-12)
    assert s.pair_mean == pytest.approx(upper.mean(), abs=1e-12)
    assert s.pair_std == pytest.approx(upper.std(), abs=1e-12)


def test_summary_checks_the_size():
    with pytest.raises(ValueError):
        S.summary(sparse.eye(3), n=4)


# --------------------------------------------------------------------------- clustering and ARI


@pytest.mark.parametrize("truth, found, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),         # sum C(n_ij,2)=1, rows 2, cols 1, E=1/3, max 1.5
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),           # no pair agrees: below chance
    ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2], 8 / 33),  # index 2, rows 6, cols 3, E=1.2, max 4.5
    (["a", "a", "b"], [7, 7, 3], 1.0),            # same partition, other names
    ([0, 0, 0], [1, 1, 1], 1.0),                  # one cluster each: nothing to disagree about
])
def test_adjusted_rand_index_on_hand_worked_examples(truth, found, expected):
    assert S.adjusted_rand_index(truth, found) == pytest.approx(expected)


def blocks() -> pd.DataFrame:
    names = ["a1", "b1", "a2", "b2", "a3"]
    group = [n[0] for n in names]
    m = np.array([[1.0 if i == j else (0.8 if gi == gj else 0.1) for j, gj in enumerate(group)]
                  for i, gi in enumerate(group)])
    return pd.DataFrame(m, index=names, columns=names)


def test_cluster_order_puts_blocks_together_and_labels_recover_them():
    m = blocks()
    order = S.cluster_order(m)
    assert sorted(order) == sorted(m.index)
    firsts = [o[0] for o in order]
    assert firsts in (["a"] * 3 + ["b"] * 2, ["b"] * 2 + ["a"] * 3)
    labels = S.cluster_labels(m, 2)
    assert S.adjusted_rand_index([n[0] for n in m.index], labels.loc[m.index]) == 1.0


# --------------------------------------------------------------------------- layer statistics


def test_layer_stats_bytes_saved_on_a_known_table():
    layers = pd.DataFrame({
        "set": ["s"] * 5 + ["t"],
        "image": ["a", "a", "b", "b", "c", "z"],
        "digest": ["base", "app1", "base", "app2", "base", "only"],
        "size": [100, 10, 100, 20, 100, 7],
    })
    st = S.layer_stats(layers).set_index("set")
    s = st.loc["s"]
    assert (s["images"], s["layers"], s["unique_layers"]) == (3, 5, 3)
    assert s["unique_share"] == pytest.approx(0.6)
    assert (s["bytes_without_sharing"], s["bytes_with_sharing"], s["bytes_saved"]) == (330, 130, 200)
    assert s["saved_fraction"] == pytest.approx(200 / 330)
    assert st.loc["t", "bytes_saved"] == 0
    sizes = S.layer_size_table(layers).set_index(["set", "digest"])
    assert len(sizes) == 4 and sizes.loc[("s", "base"), "images"] == 3 and sizes.loc[("s", "base"), "size"] == 100


# --------------------------------------------------------------------------- verdicts


def summ(mean, std, n=10):
    return S.SimilaritySummary(mean, std, mean, std, n, n * (n - 1) // 2)


PUB = {"x": (0.5, 0.2), "y": (0.3, 0.1)}


def test_similarity_sets_supported_when_every_mean_and_std_match():
    v = S.verdict_similarity_sets({"x": summ(0.505, 0.195), "y": summ(0.3, 0.1)}, PUB)
    assert v.verdict == "supported" and "x: mean 0.5050 vs 0.5" in v.measured and v.n == 20


def test_similarity_sets_partly_when_means_match_but_a_std_does_not():
    v = S.verdict_similarity_sets({"x": summ(0.5, 0.05), "y": summ(0.3, 0.1)}, PUB)
    assert v.verdict == "partly supported" and "stds differ for x" in v.reason


def test_similarity_sets_partly_when_only_some_sets_match_or_are_measured():
    assert S.verdict_similarity_sets({"x": summ(0.5, 0.2), "y": summ(0.6, 0.1)}, PUB).verdict == "partly supported"
    v = S.verdict_similarity_sets({"x": summ(0.5, 0.2)}, PUB)
    assert v.verdict == "partly supported" and "not measured (absent or incomplete here): y" in v.reason


def test_similarity_sets_not_supported_when_no_mean_matches():
    v = S.verdict_similarity_sets({"x": summ(0.7, 0.2), "y": summ(0.1, 0.1)}, PUB)
    assert v.verdict == "not supported" and v.value == pytest.approx(0.2)


def test_similarity_sets_not_testable_without_any_published_set():
    assert S.verdict_similarity_sets({"q": summ(0.5, 0.2)}, PUB).verdict == "not testable here"


def grouped(sizes: dict[str, int], within: float = 0.8, between: float = 0.1, spack_to_others: float = 0.05):
    names = [f"{g}-{i}" for g, k in sizes.items() for i in range(k)]
    group = {n: n.rsplit("-", 1)[0] for n in names}
    m = pd.DataFrame(between, index=names, columns=names)
    for a, b in itertools.product(names, names):
        if group[a] == group[b]:
            m.loc[a, b] = within
        elif "spack" in (group[a], group[b]):
            m.loc[a, b] = spack_to_others
    for n in names:
        m.loc[n, n] = 1.0
    return m, group


def test_similarity_clusters_supported_when_environments_separate_and_spack_stands_apart():
    m, g = grouped({"cpu": 4, "gpu": 4, "spack": 3})
    v = S.verdict_similarity_clusters(m, g)
    assert v.verdict == "supported" and v.value == 1.0 and "environments cpu, gpu: ARI 1.000" in v.measured
    assert "spack images in 1 cluster(s), shared with 0 other" in v.measured


def test_similarity_clusters_at_most_partly_without_environment_labels():
    m, g = grouped({"ensemble": 4, "study": 4, "spack": 3})
    v = S.verdict_similarity_clusters(m, g)
    assert v.verdict == "partly supported" and "not testable with these sets" in v.reason


def test_similarity_clusters_partly_when_spack_resembles_the_others():
    m, g = grouped({"cpu": 4, "gpu": 4, "spack": 3})
    g = dict(g, **{"cpu-0": "spack", "gpu-0": "spack"})  # spack builds that cluster with the others
    v = S.verdict_similarity_clusters(m, g)
    assert v.verdict == "partly supported" and "fail: spack" in v.reason


def test_similarity_clusters_not_supported_when_nothing_holds():
    rng = np.random.default_rng(0)
    names = [f"n{i}" for i in range(12)]
    x = rng.uniform(0.3, 0.9, (12, 12))
    x = (x + x.T) / 2
    np.fill_diagonal(x, 1.0)
    m = pd.DataFrame(x, index=names, columns=names)
    g = {n: ["cpu", "gpu", "spack"][i % 3] for i, n in enumerate(names)}  # groups unrelated to the matrix
    v = S.verdict_similarity_clusters(m, g)
    assert v.verdict == "not supported" and v.value < 0.9


def test_similarity_clusters_not_supported_as_a_whole_when_the_spack_part_is_untested():
    """Environments separate but there is no spack group: one part of two holds (was "supported")."""
    m, g = grouped({"cpu": 4, "gpu": 4})
    v = S.verdict_similarity_clusters(m, g)
    assert v.verdict == "partly supported" and "spack part is not testable" in v.reason


def test_similarity_sets_leave_out_an_incomplete_or_empty_set():
    """A set missing files here is other images than the published: not measured, not "differs"."""
    v = S.verdict_similarity_sets({"x": summ(0.5, 0.2), "y": summ(0.9, 0.1)}, PUB, incomplete={"y"})
    assert v.verdict == "partly supported" and "not measured (absent or incomplete here): y" in v.reason
    empty = S.SimilaritySummary(math.nan, math.nan, math.nan, math.nan, 0, 0)
    v = S.verdict_similarity_sets({"x": summ(0.5, 0.2), "y": empty}, PUB)
    assert v.verdict == "partly supported" and "means differ" not in v.reason
    assert S.verdict_similarity_sets({"x": empty}, PUB).verdict == "not testable here"


@pytest.mark.parametrize("shift", [0.0, 0.004, -0.0099, 0.0099])
def test_similarity_sets_a_measured_figure_within_the_tolerance_is_not_refused(shift):
    v = S.verdict_similarity_sets({"x": summ(0.5 + shift, 0.2 - shift), "y": summ(0.3 - shift, 0.1 + shift)}, PUB)
    assert v.verdict == "supported"


@pytest.mark.parametrize("shift", [0.05, -0.2, 0.4])
def test_similarity_sets_figures_moved_far_from_the_claim_change_the_verdict(shift):
    assert S.verdict_similarity_sets({"x": summ(0.5 + shift, 0.2), "y": summ(0.3 + shift, 0.1)}, PUB).verdict \
        == "not supported"
    assert S.verdict_similarity_sets({"x": summ(0.5, 0.2), "y": summ(0.3 + shift, 0.1)}, PUB).verdict \
        == "partly supported"


def test_similarity_clusters_move_spack_into_the_others_and_the_verdict_changes():
    m, g = grouped({"cpu": 4, "gpu": 4, "spack": 3}, spack_to_others=0.05)
    assert S.verdict_similarity_clusters(m, g).verdict == "supported"
    # spack builds that resemble the cpu images as much as those resemble each other
    spack, cpu = [n for n in m.index if g[n] == "spack"], [n for n in m.index if g[n] == "cpu"]
    gpu = [n for n in m.index if g[n] == "gpu"]
    m.loc[spack, cpu], m.loc[cpu, spack], m.loc[spack, gpu], m.loc[gpu, spack] = 0.9, 0.9, 0.1, 0.1
    v = S.verdict_similarity_clusters(m, g)
    assert v.verdict == "partly supported" and "fail: spack" in v.reason


def test_environment_groups_recognises_cloud_cpu_gpu_labels():
    assert S.environment_groups(["cpu", "GPU build", "aws", "spack", "performance-study"]) == ["GPU build", "aws", "cpu"]


# --------------------------------------------------------------------------- the archived sets


@pytest.fixture(scope="module")
def archived(raw):
    return {s: read_set(raw / SIM / "containers" / s) for s in SETS}


def upstream_matrix(raw, name, kind):
    return pd.read_csv(raw / SIM / "similarity" / name / f"{kind}-similarity.csv", index_col=0)


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("kind, which, item", [(DIGEST_CSV, "layers", "digest"),
                                               (CONTENT_CSV, "history", "content_digest")])
def test_matrices_equal_the_upstream_csvs(raw, archived, name, kind, which, item):
    """Upstream row names are its full_uri, `<uri>:<tag>` with the uri the folder below the set: our `image`."""
    up = upstream_matrix(raw, name, kind)
    ours = S.jaccard_frame(getattr(archived[name], which), item=item)
    assert list(up.index) == list(up.columns) and set(ours.index) == set(up.index)
    np.testing.assert_allclose(ours.loc[up.index, up.columns].to_numpy(), up.to_numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("kind", [DIGEST_CSV, CONTENT_CSV])
def test_cluster_orders_equal_the_upstream_clustermap(raw, name, kind):
    """Clustered in the upstream's row order (ties break by position), with its shortened names."""
    up = upstream_matrix(raw, name, kind)
    labels = json.loads((raw / SIM / "similarity" / name / f"cluster-{kind}-labels.json").read_text())
    short = [i.replace("ghcr.io/converged-computing/", "").replace("metric-", "") for i in S.cluster_order(up)]
    assert short == labels["rows"] == labels["cols"]


def test_published_means_and_stds_come_out_of_the_archived_data(archived):
    """Full matrix with diagonal, population std, as published: 0.659/0.128, 0.4027/0.384, 0.2/0.327."""
    got = {f"similarity/{n}": S.summary(S.jaccard(S.incidence(s.layers)[0])) for n, s in archived.items()}
    for name, (mean, std) in S.PUBLISHED_DIGEST_SIMILARITY.items():
        assert round(got[name].mean, 3) == round(mean, 3) and round(got[name].std, 3) == round(std, 3)
    assert got["similarity/performance-study"].mean == pytest.approx(0.4026779480749065, abs=1e-12)
    # Distinct pairs only: what a reader might take "mean similarity" to mean.
    pairs = {n.split("/")[1]: (round(s.pair_mean, 4), round(s.pair_std, 4)) for n, s in got.items()}
    assert pairs == {"containers": (0.6211, 0.0612), "performance-study": (0.3363, 0.3461),
                     "spack": (0.0667, 0.0)}
    v = S.verdict_similarity_sets(got)
    assert v.verdict == "supported", v.measured


def test_content_summaries_of_the_archived_sets(archived):
    got = {n: S.summary(S.jaccard_frame(s.history, item="content_digest")) for n, s in archived.items()}
    table = {n: tuple(round(x, 4) for x in (s.mean, s.std, s.pair_mean, s.pair_std)) for n, s in got.items()}
    assert table == {"containers": (0.7624, 0.0956, 0.736, 0.0565),
                     "performance-study": (0.6733, 0.301, 0.6371, 0.2958),
                     "spack": (1.0, 0.0, 1.0, 0.0)}  # every spack image lists the same build steps


def test_upstream_space_only_normalisation_gives_the_same_content_classes(archived):
    """The upstream removed only spaces; we remove all white space. On these data the classes agree."""
    for s in archived.values():
        h = s.history
        spaces = h["created_by"].str.replace(" ", "").str.lower()
        assert spaces.nunique() == h["content_digest"].nunique()
        assert (spaces.groupby(h["content_digest"]).nunique() == 1).all()


def test_layer_stats_and_sizes_match_the_upstream_readme_and_csv(raw, archived):
    layers = pd.concat([s.layers for s in archived.values()])
    st = S.layer_stats(layers).set_index("set")
    counts = {n: (int(r["layers"]), int(r["unique_layers"])) for n, r in st.iterrows()}
    # README: 33 unique of 118 (an older ensemble-stream; the archived one has 2 more layers), 115/258, 50/56
    assert counts == {"containers": (120, 33), "performance-study": (258, 115), "spack": (56, 50)}
    for name, s in archived.items():
        up = pd.read_csv(raw / SIM / "similarity" / name / "layer-sizes.csv")
        ours = s.layers[["image", "digest", "size"]].sort_values(["image", "digest", "size"]).to_numpy().tolist()
        theirs = up[["full_uri", "digest", "layer_size"]].sort_values(["full_uri", "digest", "layer_size"])
        assert ours == theirs.to_numpy().tolist()


def test_clusters_verdict_on_the_union_of_the_archived_sets(archived):
    groups = {i: n for n, s in archived.items() for i in s.images}
    history = pd.concat([s.history for s in archived.values()])
    content = S.jaccard_frame(history, item="content_digest", images=list(groups))
    v = S.verdict_similarity_clusters(content, groups)
    # Spack images share the ubuntu base steps with the others (0.28) but still form a cluster of their
    # own; one performance-study image (metric-amg2023:spack-slim) clusters with the ensemble containers.
    assert "non-spack image: 0.280" in v.measured and v.value == pytest.approx(0.8751, abs=1e-4)
    assert "spack images in 1 cluster(s), shared with 0 other" in v.measured
    assert v.verdict == "partly supported" and "not testable with these sets" in v.reason
    clusters = S.cluster_labels(content, 3)
    odd = [i for i in groups if groups[i] == "performance-study"
           and clusters[i] == clusters["ghcr.io/converged-computing/ensemble-osu:latest"]]
    assert odd == ["ghcr.io/converged-computing/metric-amg2023:spack-slim"]


# --------------------------------------------------------------------------- sets keyed by id or path


@pytest.fixture
def two_performance_sets(raw, tmp_path):
    """data/raw plus the performance study's container-sizes set (absent here: offline mirror), made of
    real manifests: the similarity performance-study images and the spack ones, 17 in all."""
    root = tmp_path / "raw"
    root.mkdir()
    (root / "container-chonks").symlink_to(raw / "container-chonks")
    target = root / "performance-study/analysis/container-sizes/data/containers"
    for name in ("performance-study", "spack"):
        shutil.copytree(raw / SIM / "containers" / name, target, dirs_exist_ok=True)
    return root


def test_two_catalog_sets_of_the_same_folder_name_stay_two_sets(two_performance_sets):
    sets = S.load_sets(["container-sizes/performance-study", "similarity/performance-study"],
                       raw=two_performance_sets)
    assert [s.key for s in sets] == ["container-sizes/performance-study", "similarity/performance-study"]
    assert [s.label for s in sets] == ["container-sizes/performance-study", "similarity/performance-study"]
    assert [len(s.image_set.images) for s in sets] == [17, 10]
    summaries = S.summarize_sets(sets, ["digest"])
    table = summaries.table.set_index("set")
    assert table.loc["container-sizes/performance-study", "images"] == 17
    assert table.loc["similarity/performance-study", "images"] == 10
    assert set(summaries.digest) == {"container-sizes/performance-study", "similarity/performance-study"}
    layers = S.all_layers(sets)
    assert layers.groupby("set")["image"].nunique().to_dict() == {"container-sizes/performance-study": 17,
                                                                  "similarity/performance-study": 10}
    # The published "study containers" figure is checked against similarity/performance-study only
    v = S.verdict_similarity_sets(summaries.digest, tolerance=0.01)
    assert "similarity/performance-study: mean 0.4027" in v.measured
    assert "container-sizes" not in v.measured and v.n == 10
    # ... and the other set, alone, is not the published one, whatever its folder is called
    alone = S.summarize_sets(sets[:1], ["digest"]).digest
    assert S.verdict_similarity_sets(alone).verdict == "not testable here"


def test_two_plain_folders_of_the_same_name_get_distinct_labels(raw, tmp_path):
    for parent, name in (("a", "containers"), ("b", "spack")):
        shutil.copytree(raw / SIM / "containers" / name, tmp_path / parent / "images")
    sets = S.load_sets([tmp_path / "a" / "images", str(tmp_path / "b" / "images")])
    assert [s.label for s in sets] == ["a/images", "b/images"] and [s.slug for s in sets] == ["a_images", "b_images"]
    assert sets[0].key == str((tmp_path / "a" / "images").resolve())
    table = S.summarize_sets(sets).table
    assert len(table) == 4 and table.groupby("set")["images"].first().to_dict() == {"a/images": 10, "b/images": 7}
    assert S.verdict_similarity_sets(S.summarize_sets(sets, "digest").digest).verdict == "not testable here"
    matrix, groups, shared = S.union_content(sets)
    assert len(matrix) == 17 and shared == [] and set(groups.values()) == {"a/images", "b/images"}


def test_the_same_set_twice_or_an_unknown_set_is_refused(raw, tmp_path):
    with pytest.raises(ValueError, match="listed more than once"):
        S.load_sets(["similarity/spack", "similarity/spack"])
    with pytest.raises(ValueError, match="neither a folder of manifests nor a catalog set"):
        S.load_sets(["similarity/nope"])
    with pytest.raises(ValueError, match="measures"):
        S.summarize_sets(S.load_sets("similarity/spack"), ["digests"])


def test_an_image_in_two_sets_keeps_a_row_in_each(raw, tmp_path):
    shutil.copytree(raw / SIM / "containers" / "spack", tmp_path / "copy")
    sets = S.load_sets(["similarity/spack", tmp_path / "copy"])
    assert [s.label for s in sets] == ["spack", "copy"]
    matrix, groups, shared = S.union_content(sets)
    assert len(shared) == 7 and len(matrix) == 14
    image = shared[0]
    assert groups[f"{image} [spack]"] == "spack" and groups[f"{image} [copy]"] == "copy"
    assert matrix.loc[f"{image} [spack]", f"{image} [copy]"] == 1.0
    assert S.resolve_label(sets, "similarity/spack") == "spack" and S.resolve_label(sets, "nothing") == "nothing"
    assert S.resolve_label(sets, "copy") == "copy" and S.resolve_label(sets, f"{tmp_path.name}/copy") == "copy"


def test_a_spack_set_name_that_fits_two_sets_is_refused(raw, tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(raw / SIM / "containers/spack", tmp_path / parent / "spack")
    sets = S.load_sets([tmp_path / "a/spack", tmp_path / "b/spack"])
    with pytest.raises(ValueError, match="fits several sets"):
        S.resolve_label(sets, "spack")
    assert S.resolve_label(sets, "b/spack") == "b/spack"


def test_a_catalog_set_with_files_missing_is_not_compared_with_the_published(raw, tmp_path):
    """One manifests file of similarity/spack gone: 6 of its 7 images are another set than the published."""
    root = tmp_path / "raw"
    shutil.copytree(raw / SIM / "containers/spack", root / SIM / "containers/spack")
    shutil.copytree(raw / SIM / "similarity/spack", root / SIM / "similarity/spack")
    next((root / SIM / "containers/spack").rglob("manifests-config-layers.json")).unlink()
    sets = S.load_sets(["similarity/spack"], raw=root)
    assert len(sets[0].unavailable) == 1 and not sets[0].complete and len(sets[0].image_set.images) == 6
    summaries = S.summarize_sets(sets, "digest")
    assert "max |ours - upstream|" not in summaries.table  # the upstream's matrix is of seven images
    v = S.verdict_similarity_sets(summaries.digest, incomplete={s.key for s in sets if not s.complete})
    assert v.verdict == "not testable here"


# --------------------------------------------------------------------------- summaries in row blocks


def _same_summary(a, b):
    assert (a.n, a.n_pairs) == (b.n, b.n_pairs)
    for f in ("mean", "std", "pair_mean", "pair_std"):
        assert math.isclose(getattr(a, f), getattr(b, f), rel_tol=1e-12, abs_tol=1e-15), f


@pytest.mark.parametrize("block_bytes", [1, 40 * 7 * 3, S.DEFAULT_BLOCK_BYTES])
def test_blocked_summary_equals_the_whole_matrix_summary(block_bytes):
    images = {"a": [1, 2, 3], "b": [2, 3], "c": [], "d": [], "e": [9], "f": [1, 9], "g": [1, 2, 3]}
    inc, _, _ = S.incidence(table(images))
    _same_summary(S.summary_from_incidence(inc, max_block_bytes=block_bytes), S.summary(S.jaccard(inc)))


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("which, item", [("layers", "digest"), ("history", "content_digest")])
def test_blocked_summary_equals_todays_on_the_real_sets(archived, name, which, item):
    inc, _, _ = S.incidence(getattr(archived[name], which), item=item)
    today = S.summary(S.jaccard(inc))
    for block_bytes in (40 * inc.shape[0] * 5, S.DEFAULT_BLOCK_BYTES):  # 5 rows at a time, and all at once
        _same_summary(S.summary_from_incidence(inc, max_block_bytes=block_bytes), today)


def test_blocked_summary_refuses_a_bad_budget():
    inc, _, _ = S.incidence(table({"a": [1]}))
    with pytest.raises(ValueError, match="max_block_bytes must be a positive"):
        S.summary_from_incidence(inc, max_block_bytes=0)


def test_heatmap_only_for_what_can_be_drawn(tmp_path):
    from types import SimpleNamespace

    from pullstudy.report.output import StudyOutput
    from pullstudy.studies import similarity_figures as F

    big = pd.DataFrame(np.eye(F.MAX_HEATMAP_IMAGES + 1), index=[f"i{k}" for k in range(F.MAX_HEATMAP_IMAGES + 1)])
    big.columns = big.index
    with pytest.raises(ValueError, match=r"301 images is more than the 300 a heatmap can draw"):
        F.heatmap(big, list(big.index), title="t", measure="m")
    small = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["a:1", "b:1"], columns=["a:1", "b:1"])
    summaries = SimpleNamespace(matrices={("big", "digest"): big, ("small", "digest"): small})
    loaded = [SimpleNamespace(label="big", slug="big"), SimpleNamespace(label="small", slug="small")]
    out = StudyOutput("05-test", tmp_path)
    charts = F.matrix_charts(summaries, loaded, out)
    assert len(charts) == 1 and out.charts == ["heatmap-small-digest"]
    assert out.exclusions == {"heatmaps not drawn: more than 300 images": 1}
