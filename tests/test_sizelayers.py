"""Study 01's verdicts follow the data: each branch reached from synthetic pulls built to reach it."""

import numpy as np
import pandas as pd
import pytest

from pullstudy.records import analysable_pulls
from pullstudy.studies import sizelayers
from pullstudy.report.output import StudyOutput

SIZES = [50e6, 200e6, 1e9, 5e9, 19e9]


def pulls(seconds_of, layers=(9,), per_size=30, noise=0.02, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for n_layers in layers:
        for size in SIZES:
            t = seconds_of(size, n_layers) * rng.lognormal(0, noise, per_size)
            rows += [{"size_bytes": int(size), "layers": n_layers, "pull_wait_s": v, "pull_s": v} for v in t]
    return pd.DataFrame(rows)


def test_size_growth_supported_when_medians_rise_and_largest_is_about_two_minutes():
    df = pulls(lambda s, n: 1 + s / 1.6e8)  # 19 GB -> ~120 s
    v = sizelayers.verdict_size_growth(df, n_boot=300)
    assert v.verdict == "supported" and 110 < v.value < 130 and v.ci_low <= v.value <= v.ci_high


def test_size_growth_partly_supported_when_the_figure_is_off():
    v = sizelayers.verdict_size_growth(pulls(lambda s, n: 1 + s / 0.5e8), n_boot=300)  # ~380 s
    assert v.verdict == "partly supported" and v.value > 300


def test_size_growth_not_supported_when_time_is_flat():
    v = sizelayers.verdict_size_growth(pulls(lambda s, n: 30.0, noise=0.1), n_boot=300)
    assert v.verdict == "not supported"


def test_size_growth_not_testable_with_two_sizes():
    df = pulls(lambda s, n: s / 1e8)
    v = sizelayers.verdict_size_growth(df[df["size_bytes"] < 1e9], n_boot=100)
    assert v.verdict == "not testable here"


def _verdict(extra_s_of):
    df = pulls(lambda s, n: 1 + s / 1.6e8 + (extra_s_of(s) if n == 125 else 0), layers=(9, 125))
    diff = sizelayers.layer_difference(df, n_boot=300)
    return diff, sizelayers.verdict_layers_no_effect(diff, bound_s=10)


def test_layers_supported_when_no_difference_is_detectable_and_all_within_bound():
    diff, v = _verdict(lambda s: 0.0)
    assert (diff["ci_low"] <= 0).sum() >= 3 and v.verdict == "supported", v.reason


def test_layers_a_real_difference_within_the_bound_supports_at_most_bound_s():
    # rule "bound": a detectable 4 s at every size is still "at most ~10 s slower"
    diff, v = _verdict(lambda s: 4.0)
    assert v.verdict == "supported" and "CI excludes 0 at" in v.measured and "cluster" in v.reason
    assert v.ci_low <= v.value <= v.ci_high and v.value == pytest.approx(4.0, abs=1.5)
    assert (diff["ci_low"] > 0).sum() >= 3


def test_layers_partly_supported_when_the_interval_reaches_past_the_bound():
    diff, v = _verdict(lambda s: 10.0)
    assert v.verdict == "partly supported" and v.ci_low <= 10 <= v.ci_high


def test_layers_one_extreme_size_does_not_decide():
    # one size 40 s beyond the bound, the others unaffected: the median over sizes decides
    diff, v = _verdict(lambda s: 40.0 if s > 10e9 else 0.0)
    assert ((diff["ci_low"] > 10).sum() == 1) and v.verdict == "supported"


def test_layers_not_supported_beyond_the_bound():
    _, v = _verdict(lambda s: 30.0)
    assert v.verdict == "not supported" and "beyond the bound" in v.reason


def test_layer_difference_needs_two_layer_counts():
    with pytest.raises(ValueError, match="only one layer count"):
        sizelayers.layer_difference(pulls(lambda s, n: 1.0), n_boot=10)


def test_analysable_pulls_counts_every_exclusion():
    df = pulls(lambda s, n: 5.0, per_size=4)
    df = df.assign(study_image=True, cache_hit=False, image_size_reported=1000, image="r/x", tag="t")
    df.loc[0, "study_image"] = False
    df.loc[1, "cache_hit"] = True
    df.loc[2, "pull_wait_s"] = np.nan
    df.loc[3, "size_bytes"] = None
    kept, excluded = analysable_pulls(df)
    assert len(kept) == len(df) - 4 and sum(excluded.values()) == 4 and len(excluded) == 4


def test_model_fits_report_each_regime_and_basis():
    df = pulls(lambda s, n: 0.5 + 0.03 * n + s / 2e8, layers=(9, 125)).assign(image_size_reported=lambda d: d.size_bytes // 900)
    fits = sizelayers.fit_models(df, split_bytes=1e9, n_boot=100)
    assert len(fits) == 6 and set(fits["bytes"]) == {"uncompressed (built)", "as transferred"}
    whole = fits[(fits["regime"] == "all sizes") & (fits["bytes"] == "uncompressed (built)")].iloc[0]
    assert whole["throughput_mb_s_ci_low"] <= 200 <= whole["throughput_mb_s_ci_high"]
    assert whole["per_layer_ms_ci_low"] <= 30 <= whole["per_layer_ms_ci_high"]


def test_one_layer_count_makes_only_the_layers_part_untestable():
    df = pulls(lambda s, n: 1 + s / 1.6e8).assign(image_size_reported=lambda d: d.size_bytes // 900)
    reasons = sizelayers.untestable_parts(df, df, "exp/run1", "exp/run1")
    assert list(reasons) == ["layers-no-effect"] and "one layer count only (9)" in reasons["layers-no-effect"]
    v = sizelayers.not_testable("layers-no-effect", reasons["layers-no-effect"])
    assert v.verdict == "not testable here" and "exp/run1" in v.reason
    assert "not testable with this run" in sizelayers.verdict_line("Layers", v)


def test_images_without_encoded_size_are_counted_and_every_part_says_why(tmp_path):
    apps = pd.DataFrame({"size_bytes": [None, None], "layers": [None, None], "pull_wait_s": [3.0, 4.0]})
    out = StudyOutput("01-pull-size-layers", tmp_path)
    kept = sizelayers.encoded_size_only(apps, "exp/apps", out)
    assert kept.empty and out.exclusions == {"exp/apps: image tag does not encode layers and size": 2}
    reasons = sizelayers.untestable_parts(kept, kept, "exp/apps", "exp/apps")
    assert set(reasons) == {"size-growth", "layers-no-effect", "model"}
    assert "do not encode" in reasons["size-growth"] and "do not encode a layer count" in reasons["layers-no-effect"]


def test_sizes_built_with_only_one_of_two_layer_counts_cannot_be_compared():
    df = pulls(lambda s, n: 1.0, layers=(9, 125))
    df = df[((df["layers"] == 9) & (df["size_bytes"] < 1e9)) | ((df["layers"] == 125) & (df["size_bytes"] > 1e9))]
    assert "no image size built with both 9 and 125" in sizelayers.untestable_parts(df, df, "r", "r")["layers-no-effect"]


def test_model_lines_say_why_a_regime_was_not_fitted():
    models = pd.DataFrame([{"regime": "< 1 GB", "bytes": "as transferred", "error": "needs 2 sizes"}])
    assert sizelayers.model_lines(models) == ["* **< 1 GB, as transferred**: not fitted (needs 2 sizes)"]
