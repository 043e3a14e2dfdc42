"""Behaviour of pullstudy.stats: correctness on known distributions, coverage, reproducibility."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullstudy import stats
from pullstudy.stats import (
    DifferenceCI,
    EquivalenceResult,
    MedianCI,
    PullModel,
    RatioCI,
    bootstrap_median_ci,
    bootstrap_median_difference_ci,
    bootstrap_ratio_of_medians_ci,
    equivalence_test_log_ratio,
    fit_pull_model,
    median_table,
)

TRUE_FIXED_S = 2.0
TRUE_PER_LAYER_MS = 30.0
TRUE_THROUGHPUT_MB_S = 150.0


def covers(low: float, high: float, truth: float) -> bool:
    return low <= truth <= high


def synthetic_pulls(n: int, seed: int, noise_s: float = 0.2) -> pd.DataFrame:
    """Pulls from the true model: 2 s fixed, 30 ms per layer, 150 MB/s, Gaussian noise."""
    rng = np.random.default_rng(seed)
    layers = rng.integers(1, 40, n)
    size = rng.uniform(10e6, 2e9, n)
    time = (
        TRUE_FIXED_S
        + TRUE_PER_LAYER_MS * 1e-3 * layers
        + size / (TRUE_THROUGHPUT_MB_S * 1e6)
        + rng.normal(0.0, noise_s, n)
    )
    return pd.DataFrame({"pull_wait_s": time, "layers": layers, "size_bytes": size})


# --------------------------------------------------------------------------- bootstrap_median_ci


class TestMedianCI:
    def test_large_normal_sample_covers_true_median(self):
        x = np.random.default_rng(1).normal(10.0, 2.0, 5000)
        ci = bootstrap_median_ci(x)
        assert isinstance(ci, MedianCI)
        assert ci.n == 5000
        assert covers(ci.ci_low, ci.ci_high, 10.0)
        assert ci.ci_low < ci.median < ci.ci_high
        # Asymptotic SE of the median is 1.2533 * sigma / sqrt(n) ~ 0.035: the 95% CI is ~0.14 wide.
        assert 0.08 < ci.ci_high - ci.ci_low < 0.22

    def test_ci_narrows_as_n_grows(self):
        rng = np.random.default_rng(2)
        widths = [
            (ci := bootstrap_median_ci(rng.normal(0.0, 1.0, n))).ci_high - ci.ci_low
            for n in (30, 300, 3000)
        ]
        assert widths[0] > widths[1] > widths[2]
        # Width scales like 1/sqrt(n): a 100-fold larger sample is roughly 10 times narrower.
        assert 5 < widths[0] / widths[2] < 20

    def test_higher_confidence_gives_wider_interval(self):
        x = np.random.default_rng(3).lognormal(1.0, 0.5, 200)
        ci90 = bootstrap_median_ci(x, confidence=0.90)
        ci99 = bootstrap_median_ci(x, confidence=0.99)
        assert ci99.ci_low < ci90.ci_low and ci90.ci_high < ci99.ci_high

    def test_coverage_on_skewed_synthetic_data(self):
        """CIs cover the true lognormal median at about their nominal rate (95% and 80%)."""
        true_median = math.exp(1.0)
        hits95 = hits80 = 0
        n_experiments = 200
        for seed in range(n_experiments):
            x = np.random.default_rng(1000 + seed).lognormal(1.0, 0.6, 60)
            ci95 = bootstrap_median_ci(x, n_boot=500, seed=seed)
            ci80 = bootstrap_median_ci(x, n_boot=500, seed=seed, confidence=0.80)
            hits95 += covers(ci95.ci_low, ci95.ci_high, true_median)
            hits80 += covers(ci80.ci_low, ci80.ci_high, true_median)
        assert 0.90 <= hits95 / n_experiments <= 0.99
        assert 0.72 <= hits80 / n_experiments <= 0.88

    def test_same_seed_identical_other_seed_different(self):
        x = np.random.default_rng(4).exponential(3.0, 80)
        assert bootstrap_median_ci(x, seed=7) == bootstrap_median_ci(x, seed=7)
        a, b = bootstrap_median_ci(x, seed=7), bootstrap_median_ci(x, seed=8)
        assert a.median == b.median
        assert (a.ci_low, a.ci_high) != (b.ci_low, b.ci_high)

    def test_input_order_does_not_matter(self):
        x = np.random.default_rng(5).exponential(3.0, 80)
        shuffled = np.random.default_rng(6).permutation(x)
        assert bootstrap_median_ci(x) == bootstrap_median_ci(shuffled)

    def test_nans_are_dropped_and_not_counted(self):
        x = np.random.default_rng(7).normal(5.0, 1.0, 50)
        with_nans = np.concatenate([x, [np.nan] * 10])
        ci = bootstrap_median_ci(with_nans)
        assert ci.n == 50
        assert ci == bootstrap_median_ci(x)
        assert all(math.isfinite(v) for v in (ci.median, ci.ci_low, ci.ci_high))

    def test_pandas_nullable_series_with_na(self):
        s = pd.Series([1.0, None, 3.0, 2.0], dtype="Float64")
        ci = bootstrap_median_ci(s)
        assert ci.n == 3
        assert ci.median == 2.0

    @pytest.mark.parametrize("values", [[], [np.nan, np.nan], np.array([], dtype=float)])
    def test_empty_gives_nans(self, values):
        ci = bootstrap_median_ci(values)
        assert ci.n == 0
        assert math.isnan(ci.median) and math.isnan(ci.ci_low) and math.isnan(ci.ci_high)

    def test_single_value_gives_degenerate_interval(self):
        ci = bootstrap_median_ci([4.2, np.nan])
        assert ci == MedianCI(4.2, 4.2, 4.2, 1)

    @pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 95, float("nan")])
    def test_bad_confidence_raises(self, confidence):
        with pytest.raises(ValueError, match="confidence"):
            bootstrap_median_ci([1.0, 2.0], confidence=confidence)

    @pytest.mark.parametrize("n_boot", [0, -1, 2.5])
    def test_bad_n_boot_raises(self, n_boot):
        with pytest.raises(ValueError, match="n_boot"):
            bootstrap_median_ci([1.0, 2.0], n_boot=n_boot)

    def test_bad_arguments_raise_even_for_empty_input(self):
        with pytest.raises(ValueError):
            bootstrap_median_ci([], n_boot=0)

    def test_two_dimensional_input_raises(self):
        with pytest.raises(ValueError, match="one-dimensional"):
            bootstrap_median_ci(np.ones((3, 3)))

    def test_result_is_frozen(self):
        ci = bootstrap_median_ci([1.0, 2.0, 3.0])
        with pytest.raises(dataclasses.FrozenInstanceError):
            ci.median = 0.0  # type: ignore[misc]


finite_samples = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(values=finite_samples, seed=st.integers(0, 2**32 - 1))
def test_property_median_inside_its_ci(values, seed):
    ci = bootstrap_median_ci(values, n_boot=300, seed=seed)
    assert ci.n == len(values)
    assert ci.median == np.median(values)
    assert ci.ci_low <= ci.median <= ci.ci_high
    assert min(values) <= ci.ci_low and ci.ci_high <= max(values)


@settings(max_examples=40, deadline=None)
@given(
    values=finite_samples,
    scale=st.floats(min_value=0.01, max_value=100.0),
    shift=st.floats(min_value=-100.0, max_value=100.0),
)
def test_property_ci_is_affine_equivariant(values, scale, shift):
    """Changing units (s -> ms) or adding a constant moves the CI the same way."""
    x = np.asarray(values)
    base = bootstrap_median_ci(x, n_boot=200)
    moved = bootstrap_median_ci(scale * x + shift, n_boot=200)
    expected = [scale * v + shift for v in (base.median, base.ci_low, base.ci_high)]
    np.testing.assert_allclose(
        [moved.median, moved.ci_low, moved.ci_high], expected, rtol=1e-9, atol=1e-6
    )


# --------------------------------------------------------------------------- median_table


class TestMedianTable:
    @pytest.fixture
    def frame(self) -> pd.DataFrame:
        rng = np.random.default_rng(10)
        rows = []
        for image, scale in [("nginx", 2.0), ("alpine", 0.5), ("pytorch", 40.0)]:
            for mode in ("cold", "warm"):
                n = {"cold": 30, "warm": 12}[mode]
                rows += [
                    {"image": image, "mode": mode, "pull_s": v}
                    for v in rng.lognormal(math.log(scale), 0.3, n)
                ]
        return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)

    def test_shape_columns_and_sorting(self, frame):
        table = median_table(frame, ["image", "mode"], "pull_s", n_boot=300)
        assert list(table.columns) == ["image", "mode", "n", "median", "ci_low", "ci_high"]
        assert len(table) == 6
        assert list(table.index) == list(range(6))
        keys = list(zip(table["image"], table["mode"]))
        assert keys == sorted(keys)
        assert table["n"].tolist() == [30, 12] * 3
        assert table["n"].dtype == np.int64
        assert (table["ci_low"] <= table["median"]).all()
        assert (table["median"] <= table["ci_high"]).all()

    def test_single_string_key(self, frame):
        table = median_table(frame, "image", "pull_s", n_boot=300)
        assert list(table.columns) == ["image", "n", "median", "ci_low", "ci_high"]
        assert table["image"].tolist() == ["alpine", "nginx", "pytorch"]
        assert table["n"].tolist() == [42, 42, 42]

    def test_rows_match_bootstrap_median_ci_with_same_seed(self, frame):
        table = median_table(frame, "image", "pull_s", n_boot=300, seed=5)
        for row in table.itertuples():
            values = frame.loc[frame["image"] == row.image, "pull_s"]
            assert MedianCI(row.median, row.ci_low, row.ci_high, row.n) == bootstrap_median_ci(
                values, n_boot=300, seed=5
            )

    def test_group_result_independent_of_other_groups(self, frame):
        full = median_table(frame, "image", "pull_s", n_boot=300)
        only_nginx = median_table(frame[frame["image"] == "nginx"], "image", "pull_s", n_boot=300)
        pd.testing.assert_frame_equal(
            full[full["image"] == "nginx"].reset_index(drop=True), only_nginx
        )

    def test_reproducible(self, frame):
        a = median_table(frame, ["image", "mode"], "pull_s", n_boot=300, seed=1)
        b = median_table(frame, ["image", "mode"], "pull_s", n_boot=300, seed=1)
        c = median_table(frame, ["image", "mode"], "pull_s", n_boot=300, seed=2)
        pd.testing.assert_frame_equal(a, b)
        assert not a["ci_low"].equals(c["ci_low"])

    def test_nan_values_not_counted_and_all_nan_group_is_kept(self):
        df = pd.DataFrame({"g": ["a", "a", "a", "b"], "v": [1.0, np.nan, 3.0, np.nan]})
        table = median_table(df, "g", "v", n_boot=100)
        assert table["n"].tolist() == [2, 0]
        assert table.loc[0, "median"] == 2.0
        assert math.isnan(table.loc[1, "median"])

    def test_missing_column_raises(self, frame):
        with pytest.raises(ValueError, match="not in the frame"):
            median_table(frame, "registry", "pull_s")

    def test_missing_group_key_is_its_own_group_sorted_last(self):
        df = pd.DataFrame({"node": ["b", None, "a", "b", None], "v": [1.0, 2.0, 3.0, 5.0, 4.0]})
        table = median_table(df, "node", "v", n_boot=100)
        assert table["node"].iloc[:2].tolist() == ["a", "b"]
        assert pd.isna(table["node"].iloc[2])
        assert table["n"].tolist() == [1, 2, 2]
        assert table["median"].tolist() == [3.0, 3.0, 3.0]


# --------------------------------------------------------------------------- two-sample contrasts


class TestDifference:
    def test_known_shift_is_recovered(self):
        rng = np.random.default_rng(20)
        a = rng.normal(12.0, 1.0, 2000)
        b = rng.normal(10.0, 1.0, 2000)
        d = bootstrap_median_difference_ci(a, b)
        assert isinstance(d, DifferenceCI)
        assert (d.n_a, d.n_b) == (2000, 2000)
        assert d.difference == pytest.approx(np.median(a) - np.median(b))
        assert covers(d.ci_low, d.ci_high, 2.0)
        assert d.ci_low > 0  # sign convention: a - b

    def test_swapping_samples_flips_the_sign(self):
        rng = np.random.default_rng(21)
        a, b = rng.normal(12.0, 1.0, 300), rng.normal(10.0, 1.0, 300)
        assert bootstrap_median_difference_ci(b, a).difference == pytest.approx(
            -bootstrap_median_difference_ci(a, b).difference
        )
        assert bootstrap_median_difference_ci(b, a).ci_high < 0

    def test_reproducible_and_seed_sensitive(self):
        rng = np.random.default_rng(22)
        a, b = rng.exponential(3.0, 50), rng.exponential(2.0, 40)
        assert bootstrap_median_difference_ci(a, b, seed=3) == bootstrap_median_difference_ci(
            a, b, seed=3
        )
        assert bootstrap_median_difference_ci(a, b, seed=3) != bootstrap_median_difference_ci(
            a, b, seed=4
        )

    def test_nans_dropped(self):
        d = bootstrap_median_difference_ci([1.0, 2.0, np.nan, 3.0], [np.nan, 1.0])
        assert (d.n_a, d.n_b) == (3, 1)
        assert d.difference == 1.0

    @pytest.mark.parametrize("a,b", [([], [1.0, 2.0]), ([1.0, 2.0], [np.nan]), ([], [])])
    def test_empty_side_gives_nans(self, a, b):
        d = bootstrap_median_difference_ci(a, b)
        assert math.isnan(d.difference) and math.isnan(d.ci_low) and math.isnan(d.ci_high)
        assert (d.n_a, d.n_b) == (len([v for v in a if v == v]), len([v for v in b if v == v]))


class TestRatio:
    def test_halved_treatment_gives_speedup_of_two(self):
        baseline = np.random.default_rng(30).lognormal(2.0, 0.4, 400)
        r = bootstrap_ratio_of_medians_ci(baseline, baseline / 2)
        assert isinstance(r, RatioCI)
        assert r.ratio == pytest.approx(2.0)
        assert covers(r.ci_low, r.ci_high, 2.0)
        assert (r.n_baseline, r.n_treatment) == (400, 400)

    def test_independent_samples_cover_true_ratio(self):
        rng = np.random.default_rng(31)
        baseline = rng.lognormal(math.log(30.0), 0.5, 500)
        treatment = rng.lognormal(math.log(10.0), 0.5, 500)
        r = bootstrap_ratio_of_medians_ci(baseline, treatment)
        assert covers(r.ci_low, r.ci_high, 3.0)
        assert r.ci_low > 2.0 and r.ci_high < 4.5

    def test_reproducible(self):
        rng = np.random.default_rng(32)
        a, b = rng.lognormal(1.0, 0.5, 40), rng.lognormal(0.5, 0.5, 40)
        assert bootstrap_ratio_of_medians_ci(a, b, seed=1) == bootstrap_ratio_of_medians_ci(
            a, b, seed=1
        )
        assert bootstrap_ratio_of_medians_ci(a, b, seed=1) != bootstrap_ratio_of_medians_ci(
            a, b, seed=2
        )

    def test_empty_side_gives_nans(self):
        r = bootstrap_ratio_of_medians_ci([1.0, 2.0], [np.nan])
        assert math.isnan(r.ratio) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
        assert (r.n_baseline, r.n_treatment) == (2, 0)

    @pytest.mark.parametrize("bad", [[0.0, 1.0, 2.0], [-1.0, 3.0]])
    def test_non_positive_values_raise(self, bad):
        with pytest.raises(ValueError, match="positive"):
            bootstrap_ratio_of_medians_ci([1.0, 2.0], bad)


class TestEquivalence:
    def test_identical_distributions_with_large_n_are_equivalent(self):
        rng = np.random.default_rng(40)
        baseline = rng.lognormal(math.log(20.0), 0.3, 3000)
        treatment = rng.lognormal(math.log(20.0), 0.3, 3000)
        result = equivalence_test_log_ratio(baseline, treatment)
        assert isinstance(result, EquivalenceResult)
        assert result.equivalent is True
        assert 1 / 1.1 < result.ci_low <= result.ratio <= result.ci_high < 1.1
        assert result.margin == 0.10

    def test_thirty_percent_shift_is_not_equivalent(self):
        rng = np.random.default_rng(41)
        baseline = rng.lognormal(math.log(20.0), 0.3, 3000)
        treatment = rng.lognormal(math.log(20.0 / 1.3), 0.3, 3000)
        result = equivalence_test_log_ratio(baseline, treatment)
        assert result.equivalent is False
        assert covers(result.ci_low, result.ci_high, 1.3)
        assert result.ci_low > 1.1

    def test_small_noisy_samples_are_not_equivalent(self):
        """Absence of evidence: same distribution, but too little data to claim equivalence."""
        rng = np.random.default_rng(42)
        baseline = rng.lognormal(math.log(20.0), 0.6, 6)
        treatment = rng.lognormal(math.log(20.0), 0.6, 6)
        result = equivalence_test_log_ratio(baseline, treatment)
        assert result.equivalent is False
        assert result.ci_low < 1 / 1.1 or result.ci_high > 1.1

    def test_wider_margin_can_turn_the_verdict(self):
        rng = np.random.default_rng(43)
        baseline = rng.lognormal(math.log(20.0), 0.3, 3000)
        treatment = rng.lognormal(math.log(20.0 / 1.05), 0.3, 3000)
        assert not equivalence_test_log_ratio(baseline, treatment, margin=0.02).equivalent
        assert equivalence_test_log_ratio(baseline, treatment, margin=0.25).equivalent

    def test_interval_is_the_one_minus_two_alpha_ratio_interval(self):
        rng = np.random.default_rng(44)
        a, b = rng.lognormal(1.0, 0.4, 200), rng.lognormal(1.0, 0.4, 200)
        eq = equivalence_test_log_ratio(a, b, alpha=0.05, seed=9)
        ci90 = bootstrap_ratio_of_medians_ci(a, b, confidence=0.90, seed=9)
        assert eq.ratio == ci90.ratio
        assert eq.ci_low == pytest.approx(ci90.ci_low, rel=1e-3)
        assert eq.ci_high == pytest.approx(ci90.ci_high, rel=1e-3)

    def test_reproducible(self):
        rng = np.random.default_rng(45)
        a, b = rng.lognormal(1.0, 0.4, 100), rng.lognormal(1.0, 0.4, 100)
        assert equivalence_test_log_ratio(a, b, seed=1) == equivalence_test_log_ratio(a, b, seed=1)
        assert equivalence_test_log_ratio(a, b, seed=1) != equivalence_test_log_ratio(a, b, seed=2)

    def test_empty_side_is_not_equivalent(self):
        result = equivalence_test_log_ratio([], [1.0, 2.0])
        assert result.equivalent is False
        assert math.isnan(result.ratio)
        assert (result.n_baseline, result.n_treatment) == (0, 2)

    @pytest.mark.parametrize("kwargs", [{"margin": 0.0}, {"margin": -0.1}, {"alpha": 0.5}, {"alpha": 0.0}])
    def test_bad_arguments_raise(self, kwargs):
        with pytest.raises(ValueError):
            equivalence_test_log_ratio([1.0, 2.0], [1.0, 2.0], **kwargs)


# --------------------------------------------------------------------------- pull-time model


class TestPullModel:
    def test_recovers_known_parameters(self):
        model = fit_pull_model(synthetic_pulls(300, seed=50))
        assert isinstance(model, PullModel)
        assert model.n == 300
        assert model.size_column == "size_bytes"
        assert model.n_boot_used == 1000
        assert model.fixed_s == pytest.approx(TRUE_FIXED_S, abs=0.15)
        assert model.per_layer_ms == pytest.approx(TRUE_PER_LAYER_MS, abs=4.0)
        assert model.throughput_mb_s == pytest.approx(TRUE_THROUGHPUT_MB_S, rel=0.02)
        assert model.seconds_per_gb == pytest.approx(1e9 / (TRUE_THROUGHPUT_MB_S * 1e6), rel=0.02)
        assert covers(*model.fixed_s_ci, TRUE_FIXED_S)
        assert covers(*model.per_layer_ms_ci, TRUE_PER_LAYER_MS)
        assert covers(*model.throughput_mb_s_ci, TRUE_THROUGHPUT_MB_S)
        assert covers(*model.seconds_per_gb_ci, 1e3 / TRUE_THROUGHPUT_MB_S)
        assert model.r_squared > 0.99

    def test_point_estimates_match_ordinary_least_squares(self):
        df = synthetic_pulls(100, seed=51)
        design = np.column_stack([np.ones(len(df)), df["layers"], df["size_bytes"]])
        coef = np.linalg.lstsq(design, df["pull_wait_s"].to_numpy(), rcond=None)[0]
        model = fit_pull_model(df, n_boot=50)
        assert model.fixed_s == pytest.approx(coef[0], rel=1e-8)
        assert model.per_layer_ms == pytest.approx(coef[1] * 1e3, rel=1e-8)
        assert model.seconds_per_gb == pytest.approx(coef[2] * 1e9, rel=1e-8)
        assert model.throughput_mb_s == pytest.approx(1e-6 / coef[2], rel=1e-8)

    def test_throughput_ci_is_the_inverted_slope_ci(self):
        model = fit_pull_model(synthetic_pulls(80, seed=52))
        low, high = model.seconds_per_gb_ci
        assert model.throughput_mb_s_ci == pytest.approx((1e3 / high, 1e3 / low))
        assert model.throughput_mb_s_ci[0] <= model.throughput_mb_s <= model.throughput_mb_s_ci[1]

    def test_slope_ci_coverage_on_synthetic_data(self):
        n_experiments, hits = 60, 0
        for seed in range(n_experiments):
            model = fit_pull_model(synthetic_pulls(40, seed=500 + seed), n_boot=300, seed=seed)
            hits += covers(*model.seconds_per_gb_ci, 1e3 / TRUE_THROUGHPUT_MB_S)
        assert 0.85 <= hits / n_experiments <= 1.0

    def test_reproducible_seed_sensitive_and_row_order_free(self):
        df = synthetic_pulls(60, seed=53)
        a = fit_pull_model(df, n_boot=200, seed=1)
        assert a == fit_pull_model(df, n_boot=200, seed=1)
        assert a == fit_pull_model(df.sample(frac=1.0, random_state=0), n_boot=200, seed=1)
        assert a.fixed_s_ci != fit_pull_model(df, n_boot=200, seed=2).fixed_s_ci

    def test_rows_with_nan_are_dropped(self):
        df = synthetic_pulls(50, seed=54)
        dirty = df.copy()
        dirty.loc[3, "pull_wait_s"] = np.nan
        dirty.loc[7, "layers"] = np.nan
        dirty.loc[9, "size_bytes"] = np.nan
        model = fit_pull_model(dirty, n_boot=100)
        assert model.n == 47
        assert model == fit_pull_model(df.drop(index=[3, 7, 9]), n_boot=100)

    def test_single_layer_count_raises_and_suggests_layers_none(self):
        df = synthetic_pulls(50, seed=55).assign(layers=7)
        with pytest.raises(ValueError, match=r"per-layer cost cannot be identified.*layers=None"):
            fit_pull_model(df)

    def test_constant_size_raises(self):
        df = synthetic_pulls(50, seed=56).assign(size_bytes=5e8)
        with pytest.raises(ValueError, match="throughput"):
            fit_pull_model(df)

    def test_size_collinear_with_layers_raises(self):
        df = synthetic_pulls(50, seed=57)
        df["size_bytes"] = 1e6 + 50e6 * df["layers"]
        with pytest.raises(ValueError, match="rank-deficient"):
            fit_pull_model(df)

    def test_fewer_than_four_rows_raises(self):
        df = synthetic_pulls(5, seed=58)
        df.loc[[0, 1], "pull_wait_s"] = np.nan
        with pytest.raises(ValueError, match="at least 4 rows"):
            fit_pull_model(df)

    def test_missing_column_raises(self):
        with pytest.raises(ValueError, match="not in the frame"):
            fit_pull_model(synthetic_pulls(20, seed=59), size="compressed_bytes")

    def test_without_layer_term(self):
        rng = np.random.default_rng(60)
        size = rng.uniform(10e6, 2e9, 200)
        df = pd.DataFrame(
            {
                "t": 3.0 + size / 150e6 + rng.normal(0, 0.2, 200),
                "layers": 7,
                "compressed": size,
            }
        )
        model = fit_pull_model(df, time="t", layers=None, size="compressed")
        assert model.size_column == "compressed"
        assert math.isnan(model.per_layer_ms)
        assert all(math.isnan(v) for v in model.per_layer_ms_ci)
        assert covers(*model.fixed_s_ci, 3.0)
        assert covers(*model.throughput_mb_s_ci, 150.0)
        np.testing.assert_allclose(
            model.predict(None, [0.0, 1.5e9]),
            [model.fixed_s, model.fixed_s + 1.5e9 * model.seconds_per_gb / 1e9],
        )

    def test_predict_matches_true_model(self):
        model = fit_pull_model(synthetic_pulls(400, seed=61), n_boot=100)
        layers = np.array([1, 10, 30])
        size = np.array([50e6, 500e6, 1.5e9])
        truth = TRUE_FIXED_S + 0.03 * layers + size / 150e6
        predicted = model.predict(layers, size)
        assert isinstance(predicted, np.ndarray) and predicted.shape == (3,)
        np.testing.assert_allclose(predicted, truth, atol=0.1)
        with pytest.raises(ValueError, match="layer"):
            model.predict(None, size)

    def test_non_positive_bytes_slope_gives_infinite_throughput(self):
        rng = np.random.default_rng(62)
        n = 60
        layers = rng.integers(1, 40, n)
        size = rng.uniform(10e6, 2e9, n)
        df = pd.DataFrame(
            {
                "pull_wait_s": 2.0 + 0.03 * layers - size * 1e-9 + rng.normal(0, 0.05, n),
                "layers": layers,
                "size_bytes": size,
            }
        )
        model = fit_pull_model(df, n_boot=200)
        assert model.seconds_per_gb < 0 and model.seconds_per_gb_ci[1] < 0
        assert model.throughput_mb_s == math.inf
        assert model.throughput_mb_s_ci == (math.inf, math.inf)
        d = model.as_dict()
        assert d["throughput_mb_s"] is None
        assert d["throughput_mb_s_ci"] == [None, None]

    def test_slope_ci_straddling_zero_has_infinite_upper_throughput(self):
        rng = np.random.default_rng(63)
        n = 30
        layers = rng.integers(1, 40, n)
        size = rng.uniform(10e6, 2e9, n)
        df = pd.DataFrame(
            {
                "pull_wait_s": 2.0 + 0.03 * layers + rng.normal(0, 1.0, n),
                "layers": layers,
                "size_bytes": size,
            }
        )
        model = fit_pull_model(df, n_boot=300)
        low, high = model.seconds_per_gb_ci
        assert low < 0 < high
        assert model.throughput_mb_s_ci == (pytest.approx(1e3 / high), math.inf)

    def test_as_dict_is_json_safe(self):
        model = fit_pull_model(synthetic_pulls(50, seed=64), layers=None, n_boot=50)
        d = model.as_dict()
        text = json.dumps(d, allow_nan=False)
        assert json.loads(text) == d
        assert d["per_layer_ms"] is None and d["per_layer_ms_ci"] == [None, None]
        assert d["n"] == 50 and type(d["n"]) is int
        assert d["size_column"] == "size_bytes"
        assert d["fixed_s"] == model.fixed_s and type(d["fixed_s"]) is float
        assert d["fixed_s_ci"] == list(model.fixed_s_ci)

    def test_model_is_frozen(self):
        model = fit_pull_model(synthetic_pulls(20, seed=65), n_boot=20)
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.fixed_s = 0.0  # type: ignore[misc]


class TestComparisonCoverage:
    """The speedup statistics keep their promises on synthetic data whose true ratio is known."""

    def test_ratio_of_medians_ci_covers_the_true_ratio(self):
        true_ratio, hits, runs = 1.5, 0, 150
        for i in range(runs):
            rng = np.random.default_rng(1000 + i)
            base = rng.lognormal(np.log(30.0), 0.3, 30)
            treat = rng.lognormal(np.log(30.0 / true_ratio), 0.3, 30)
            r = stats.bootstrap_ratio_of_medians_ci(base, treat, n_boot=400, seed=i)
            hits += r.ci_low <= true_ratio <= r.ci_high
        assert 0.86 <= hits / runs <= 0.995

    def test_geomean_ratio_ci_covers_the_true_speedup_across_images(self):
        true_ratio, hits, runs = 1.2, 0, 80
        for i in range(runs):
            rng = np.random.default_rng(5000 + i)
            groups = [(rng.lognormal(np.log(m), 0.2, 20), rng.lognormal(np.log(m / true_ratio), 0.2, 20))
                      for m in (2.0, 10.0, 60.0, 120.0)]
            g = stats.bootstrap_geomean_ratio_ci(groups, n_boot=400, seed=i)
            hits += g.ci_low <= true_ratio <= g.ci_high
        assert 0.86 <= hits / runs <= 1.0

    def test_equivalence_is_rarely_claimed_at_the_margin(self):
        """At a true ratio on the margin, "equivalent" must be rare (about alpha), not a coin toss."""
        claimed, runs = 0, 120
        for i in range(runs):
            rng = np.random.default_rng(9000 + i)
            base = rng.lognormal(np.log(11.0), 0.1, 40)
            treat = rng.lognormal(np.log(10.0), 0.1, 40)  # true ratio 1.10: on the +10% margin
            claimed += stats.equivalence_test_log_ratio(base, treat, margin=0.10, n_boot=400, seed=i).equivalent
        assert claimed / runs <= 0.12


def test_row_nanmedians_are_numpys_nanmedian() -> None:
    """The cluster bootstrap's row medians (one sort instead of numpy.ma's path, issue 16) equal
    np.nanmedian bit for bit: short and long rows, ties, NaN padding, rows of NaN only."""
    import warnings

    from pullstudy.stats import _row_nanmedians

    rng = np.random.default_rng(7)
    for rows, cols in ((1, 1), (5, 2), (40, 31), (20, 700), (3, 1500)):
        a = rng.lognormal(2, 1.5, (rows, cols))
        a[: rows // 2] = np.round(a[: rows // 2], 1)  # ties
        a[rng.random((rows, cols)) < 0.4] = np.nan
        a[0] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmedian warns on the all-NaN row
            expected = np.nanmedian(a, axis=1)
        assert np.array_equal(_row_nanmedians(a), expected, equal_nan=True)
