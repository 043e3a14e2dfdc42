"""Baseline vs treatment comparisons: speedups, equivalence, verdicts, run selection, mismatched runs."""

import numpy as np
import pandas as pd
import pytest

from pullstudy.data import catalog
from pullstudy.studies import compare, pulls
from pullstudy import records, stats

SIZES = [1e9, 5e9, 19e9]


def runs_of(seconds_of, *, n=30, noise=0.05, seed=0, tags=None):
    rng = np.random.default_rng(seed)
    rows = []
    for size in SIZES:
        tag = f"9-layers-size-{int(size)}-bytes"
        for nodes in (4, 8):
            for v in seconds_of(size) * rng.lognormal(0, noise, n):
                rows.append({"image_key": tag, "size_bytes": int(size), "layers": 9, "cluster_nodes": nodes,
                             "pull_wait_s": v, "pull_s": v, "image_size_reported": int(size) // 1000,
                             "node": "n1"})
    return pd.DataFrame(rows)


def _compare(base, treat, **kw):
    return compare.compare_runs(base, treat, baseline="b", treatment="t", n_boot=400, **kw)


def test_geomean_ratio_of_known_groups():
    g = stats.bootstrap_geomean_ratio_ci([([2.0] * 5, [1.0] * 5), ([8.0] * 5, [1.0] * 5)], n_boot=200)
    assert g.ratio == pytest.approx(4.0) and g.ci_low == pytest.approx(4.0) and g.groups == 2


def test_halved_times_are_a_2x_speedup_everywhere():
    base = runs_of(lambda s: s / 1e8)
    c = _compare(base, runs_of(lambda s: s / 2e8, seed=1))
    assert c.overall.ci_low <= 2 <= c.overall.ci_high and c.overall.ci_low > 1.8
    assert ((c.per_image["ci_low"] <= 2) & (c.per_image["ci_high"] >= 2)).all()
    assert set(c.per_image_cluster["cluster_nodes"]) == {4, 8} and len(c.per_image_cluster) == 6
    assert compare.verdict_speedup(c, "ssd-speedup", 2).verdict == "supported"
    assert compare.verdict_speedup(c, "ssd-speedup", 5).verdict == "partly supported"
    assert compare.verdict_speedup_range(c, "streaming-synthetic", (1.5, 3)).verdict == "supported"
    assert compare.verdict_speedup_range(c, "streaming-synthetic", (15, 120)).verdict == "partly supported"


def test_no_speedup_is_not_supported_as_a_speedup():
    c = _compare(runs_of(lambda s: s / 1e8), runs_of(lambda s: s / 1e8, seed=1))
    assert compare.verdict_speedup(c, "ssd-speedup", 1.25).verdict == "not supported"


def test_no_difference_needs_shown_equivalence():
    same = _compare(runs_of(lambda s: s / 1e8, noise=0.02), runs_of(lambda s: s / 1e8, noise=0.02, seed=1))
    assert same.overall.equivalent
    assert compare.verdict_no_difference(same, "registry-no-effect").verdict == "supported"
    tiny = compare.verdict_no_difference(same, "registry-no-effect", transferred_fraction=0.001)
    assert tiny.verdict == "partly supported" and "network" in tiny.reason
    shifted = _compare(runs_of(lambda s: s / 1e8), runs_of(lambda s: s / 1.3e8, seed=1))
    assert compare.verdict_no_difference(shifted, "registry-no-effect").verdict == "not supported"
    noisy = compare.compare_runs(runs_of(lambda s: s / 1e8, n=3, noise=0.5), runs_of(lambda s: s / 1e8, n=3,
                                 noise=0.5, seed=1), baseline="b", treatment="t", n_boot=400)
    assert compare.verdict_no_difference(noisy, "registry-no-effect").verdict != "supported"


def test_mismatched_runs_are_refused_naming_both():
    base = runs_of(lambda s: s / 1e8)
    other = base.assign(image_key="ensemble-lammps:spack-skylake")
    with pytest.raises(compare.ComparisonError, match="b and t have no image in common"):
        _compare(base, other)


def test_images_in_one_run_only_are_reported_not_compared():
    base = runs_of(lambda s: s / 1e8)
    treat = runs_of(lambda s: s / 1e8, seed=1)
    treat = treat[treat["size_bytes"] != int(SIZES[0])]
    c = _compare(base, treat)
    assert c.only_in == {"b": [f"9-layers-size-{int(SIZES[0])}-bytes"], "t": []}
    assert len(c.per_image) == 2


def test_image_key_matches_across_registries():
    df = pd.DataFrame({"image": ["ghcr.io/a/container-chonks-run1:9-layers-size-5-bytes",
                                 "us-docker.pkg.dev/p/a/container-chonks:9-layers-size-5-bytes",
                                 "us-docker.pkg.dev/p/a/ensemble-osu:spack-skylake"],
                       "tag": ["9-layers-size-5-bytes", "9-layers-size-5-bytes", "spack-skylake"]})
    assert records.image_key(df).tolist() == ["9-layers-size-5-bytes", "9-layers-size-5-bytes",
                                            "ensemble-osu:spack-skylake"]
    # one key for an image whether it comes as a record (image, tag) or as a reference (a study file)
    assert [records.ref_key(i) for i in df["image"]] == records.image_key(df).tolist()


# ---------------------------------------------------------------- the archived runs, chosen by condition


@pytest.fixture(scope="module")
def archived(raw):
    runs = catalog.load()
    base = catalog.select(runs, experiment="pulling", registry=catalog.GHCR, ephemeral_storage=catalog.BOOT_DISK,
                          image_streaming=False)
    ssd = catalog.select(runs, experiment="pulling", ephemeral_storage=catalog.LOCAL_SSD)
    near = catalog.select(runs, experiment="pulling", registry=catalog.ARTIFACT_REGISTRY, image_streaming=False,
                          image_content=catalog.SYNTHETIC)
    streaming = catalog.select(runs, experiment="pulling", image_streaming=True, image_content=catalog.SYNTHETIC)
    assert [len(x) for x in (base, ssd, near, streaming)] == [1, 1, 1, 1]
    ids = [x[0].id for x in (base, near, ssd, streaming)]
    loaded, _ = pulls.load_for_analysis(ids, [4, 8, 16], "pull_wait_s", progress=False)
    return {name: compare.compare_runs(loaded[ids[0]], loaded[rid], baseline=ids[0], treatment=rid, n_boot=500)
            for name, rid in zip(("near", "ssd", "streaming"), ids[1:])}


def test_local_ssd_speeds_up_by_4_to_20_percent_largest_most(archived):
    per = archived["ssd"].per_image.sort_values("size_bytes")
    assert per["speedup"].between(1.02, 1.25).all()
    assert per["speedup"].iloc[-3:].min() > per["speedup"].iloc[:3].max()


def test_image_streaming_spans_about_11_to_200x(archived):
    per = archived["streaming"].per_image.sort_values("size_bytes")
    assert 9 < per["speedup"].iloc[0] < 14 and 170 < per["speedup"].iloc[-1] < 230
    assert per["speedup"].is_monotonic_increasing


def test_same_region_registry_is_within_ten_percent(archived):
    o = archived["near"].overall
    assert 0.9 < o.ci_low and o.ci_high < 1.1


def test_array_medians_and_iqr_are_what_pandas_gives() -> None:
    """_image_rows takes its figures from float arrays (issue 16); they must be pandas' own: NaNs skipped,
    linear quantiles, NaN for a side without values."""
    from pullstudy.studies.compare import _iqr, _median

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 5, 40):
        x = rng.lognormal(3, 1, n)
        x[rng.random(n) < 0.2] = np.nan
        s = pd.Series(x, dtype="Float64")
        expected_iqr = s.quantile(0.75) - s.quantile(0.25)
        assert (np.isnan(_median(x)) and pd.isna(s.median())) or _median(x) == s.median()
        assert (np.isnan(_iqr(x)) and pd.isna(expected_iqr)) or _iqr(x) == expected_iqr
