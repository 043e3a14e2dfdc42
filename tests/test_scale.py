"""Study 07 logic (pullstudy.studies.scale): spreads, spans, precision, cluster instances and every verdict branch."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from pullstudy.data import catalog
from pullstudy.studies import pulls, scale, clusters
from pullstudy.sources.archive import runs as archive
from pullstudy.records import RECORD_COLUMNS, analysable_pulls

T0 = pd.Timestamp("2024-01-01T00:00:00Z")
IMAGES = (1_000_000_000, 4_000_000_000, 9_000_000_000)


def make_pulls(sizes=(3, 6, 12), *, spread=lambda n: 2.0 * n, pull=lambda n, size: 5 + size / 1e8,
               run="exp/run1", whole_seconds=True, gap=10.0, source="events-{n}.json") -> pd.DataFrame:
    """Synthetic analysable pulls: one pod per node, images pulled one after another.

    Pod i of n finishes ``spread(n) * i / (n - 1)`` seconds after the first; the median pull time is
    ``pull(n, size)`` (pod offsets are centred on it). Timestamps are truncated to whole seconds like
    core/v1 events unless ``whole_seconds`` is False.
    """
    rows = []
    t = T0
    for n in sizes:
        for size in IMAGES:
            scheduled = t
            median = pull(n, size)
            offsets = np.linspace(-spread(n) / 2, spread(n) / 2, n)
            for i, off in enumerate(offsets):
                seconds = median + off
                pulled = scheduled + pd.to_timedelta(seconds + 1.0, unit="s")
                row = dict.fromkeys(RECORD_COLUMNS)
                row.update(study="exp", run=run, condition="c", backend="synthetic", cluster_nodes=n,
                           node=f"{run}-n{n}-node{i}", image=f"reg/exp:9-layers-size-{size}-bytes",
                           tag=f"9-layers-size-{size}-bytes", layers=9, size_bytes=size, content="zeros",
                           pull_s=seconds, pull_wait_s=seconds, cache_hit=False,
                           scheduled_at=scheduled, pulling_at=scheduled + pd.Timedelta(seconds=1), pulled_at=pulled,
                           source=f"{source.format(n=n)}:{len(rows) + 1}", pod=f"default/pod-{n}-{size}-{i}",
                           study_image=True)
                rows.append(row)
            t = max(r["pulled_at"] for r in rows) + pd.Timedelta(seconds=gap)
    df = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    for col in ("scheduled_at", "pulling_at", "pulled_at", "started_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
        if whole_seconds:
            df[col] = df[col].dt.floor("s")
    df["cluster_nodes"] = df["cluster_nodes"].astype("Int64")
    df["size_bytes"] = df["size_bytes"].astype("Int64")
    df["layers"] = df["layers"].astype("Int64")
    out, excluded = analysable_pulls(df)
    assert not excluded
    return out


def verdict_of(df, **kwargs):
    kwargs.setdefault("n_boot", 300)
    return scale.verdict_scale_variation(scale.spread_table(df), df, **kwargs)


# --------------------------------------------------------------------------- verdict branches


def test_spread_growing_with_flat_pull_time_is_supported():
    v = verdict_of(make_pulls())
    assert v.verdict == "supported", v.reason
    assert v.claim_id == "scale-variation"
    assert v.ci_low > 0 and v.value == pytest.approx(1.0, abs=0.1)  # spread = 2n: slope 1 on log-log
    assert "3, 6, 12 nodes (a 4x range only)" in v.reason


def test_flat_spread_is_not_supported():
    v = verdict_of(make_pulls(spread=lambda n: 30.0))
    assert v.verdict == "not supported", v.reason
    assert v.ci_high <= 0.05


def test_shrinking_spread_is_not_supported():
    v = verdict_of(make_pulls(spread=lambda n: 120.0 / n))
    assert v.verdict == "not supported"
    assert v.ci_high < 0


def test_spread_growing_because_pulls_get_slower_is_only_partly_supported():
    slower = make_pulls(pull=lambda n, size: (5 + size / 1e8) * n / 3)
    v = verdict_of(slower)
    assert v.verdict == "partly supported", v.reason
    assert "pull time grows by more than 10%" in v.reason


def test_fewer_than_three_cluster_sizes_is_not_testable():
    for sizes in ((8,), (4, 32)):
        v = verdict_of(make_pulls(sizes=sizes), listed_sizes=[4, 8, 32, 64])
        assert v.verdict == "not testable here"
        assert "fewer than 3 cluster sizes" in v.reason


def test_reason_names_covered_and_unavailable_sizes():
    v = verdict_of(make_pulls(sizes=(4, 8, 16)), listed_sizes=[4, 8, 16, 32, 64, 128, 256])
    assert "cluster sizes covered: 4, 8, 16 nodes (a 4x range only)" in v.reason
    assert "not available here: 32, 64, 128, 256" in v.reason


def test_verdict_does_not_depend_on_row_order():
    df = make_pulls()
    shuffled = df.sample(frac=1, random_state=3).reset_index(drop=True)
    a, b = verdict_of(df), verdict_of(shuffled)
    assert (a.verdict, a.value, a.ci_low, a.ci_high) == (b.verdict, b.value, b.ci_low, b.ci_high)


# --------------------------------------------------------------------------- 1-second precision


def test_resolution_is_read_from_the_data():
    whole = make_pulls()
    fine = make_pulls(whole_seconds=False)
    assert scale.timestamp_resolution(whole["pulled_at"]) == 1.0
    assert scale.timestamp_resolution(fine["pulled_at"]) < 1e-3
    assert scale.spread_table(whole)["resolution_s"].eq(1.0).all()


def test_sub_second_spreads_in_whole_second_timestamps_are_not_read_as_growth():
    # True spreads 0.15-0.6 s: with 1 s timestamps every pod of an image lands in one or two seconds.
    df = make_pulls(spread=lambda n: 0.05 * n, pull=lambda n, size: 5.2)
    table = scale.spread_table(df)
    assert table["pulled_range_s"].max() <= 1.0
    assert not table["spread_resolved"].any()
    v = verdict_of(df)
    assert v.verdict == "not testable here"
    assert "resolved spread" in v.reason


def test_the_same_sub_second_spreads_with_fine_timestamps_are_measured():
    df = make_pulls(spread=lambda n: 0.05 * n, pull=lambda n, size: 5.2, whole_seconds=False)
    table = scale.spread_table(df)
    assert table["spread_resolved"].all()
    assert table.groupby("cluster_nodes")["pulled_range_s"].median().tolist() == pytest.approx([0.15, 0.3, 0.6])
    assert verdict_of(df).verdict in ("supported", "partly supported")


def test_floored_spreads_stop_at_the_resolution():
    assert scale.floored([0.0, 0.4, 1.0, 3.0], 1.0).tolist() == [1.0, 1.0, 1.0, 3.0]


# --------------------------------------------------------------------------- table contents


def test_spread_table_figures():
    df = make_pulls(sizes=(3, 6, 12), spread=lambda n: 2.0 * n, whole_seconds=False)
    t = scale.spread_table(df).set_index(["cluster_nodes", "size_bytes"])
    row = t.loc[(6, IMAGES[0])]
    assert row["pulls"] == 6 and row["nodes"] == 6 and row["coverage"] == 1.0
    assert row["pulled_range_s"] == pytest.approx(12.0)
    # IQR of 6 evenly spaced values over 12 s (linear interpolation): 12 * (3.75 - 1.25) / 5
    assert row["pulled_iqr_s"] == pytest.approx(6.0)
    assert row["pull_wait_s_median"] == pytest.approx(15.0)
    assert row["sched_pulled_median_s"] == pytest.approx(16.0)  # pulled 1 s after the pull's own time
    assert row["sched_pulled_range_s"] == pytest.approx(12.0)
    assert row["sched_missing"] == 0
    # node-count-matched: expected range of 3 of the 6 nodes is less than the full range
    assert row["matched_nodes"] == 3
    assert 0 < row["node_range_matched_s"] < row["pulled_range_s"]


def test_missing_scheduled_events_are_counted_not_guessed():
    df = make_pulls(whole_seconds=False)
    lost = df.index[(df["cluster_nodes"] == 12)][:5]
    df.loc[lost, "scheduled_at"] = pd.NaT
    df.loc[lost[:2], "pulling_at"] = pd.NaT
    t = scale.spread_table(df)
    assert t.loc[t["cluster_nodes"] == 12, "sched_missing"].sum() == 5
    assert t["sched_pulled_median_s"].notna().all()
    start, estimated = scale.pod_start(df)
    assert estimated.sum() == 2
    # no Scheduled and no Pulling: the start is Pulled minus the kubelet's own pull time
    i = lost[0]
    assert start[i] == df.loc[i, "pulled_at"] - pd.to_timedelta(df.loc[i, "pull_wait_s"], unit="s")
    spans = scale.span_table(df)
    assert spans.loc[spans["cluster_nodes"] == 12, "starts_estimated"].item() == 2


def test_span_table_adds_up():
    df = make_pulls(gap=10.0, whole_seconds=False)
    spans = scale.span_table(df).set_index("cluster_nodes")
    assert list(spans.index) == [3, 6, 12]
    assert (spans["images"] == len(IMAGES)).all()
    assert np.allclose(spans["span_s"], spans["pull_time_sum_s"] + spans["other_s"])
    expected_pull = sum(5 + s / 1e8 for s in IMAGES)
    assert spans["pull_time_sum_s"].tolist() == pytest.approx([expected_pull] * 3)
    # wider spread at larger sizes makes the experiment longer even though median pull time is flat
    assert spans["span_s"].is_monotonic_increasing


def test_expected_subset_range_matches_brute_force():
    x = np.array([0.0, 1.0, 3.0, 7.0, 8.0, 20.0])
    for m in range(2, len(x) + 1):
        subsets = list(itertools.combinations(x, m))
        brute = np.mean([max(s) - min(s) for s in subsets])
        assert scale.expected_subset_range(x, m) == pytest.approx(brute)
    assert scale.expected_subset_range(x, len(x)) == pytest.approx(20.0)
    assert np.isnan(scale.expected_subset_range(x, 1))
    assert np.isnan(scale.expected_subset_range(x[:2], 3))


def test_separate_clusters_of_one_size_are_not_pooled():
    first = make_pulls(sizes=(4,), source="attempt-a.json")
    second = make_pulls(sizes=(4,), source="attempt-b.json")
    second["node"] = second["node"] + "-b"  # a new cluster: new node names
    second[["scheduled_at", "pulling_at", "pulled_at"]] += pd.Timedelta(hours=2)
    df = pd.concat([first, second], ignore_index=True)
    assert sorted(clusters.cluster_instances(df).unique()) == [1, 2]
    t = scale.spread_table(df)
    assert len(t) == 2 * len(IMAGES)
    assert t["pulled_range_s"].max() < 60  # the two hours between attempts are not "spread"


def test_files_sharing_nodes_are_one_cluster():
    df = make_pulls(sizes=(4,))
    # the same cluster's events split over two files: the first image's events in one, the rest in another
    df.loc[df["size_bytes"] == IMAGES[0], "source"] = "dump-2.json:1"
    assert clusters.source_file(df["source"]).nunique() == 2
    assert clusters.cluster_instances(df).eq(1).all()


def test_source_file_strips_line_and_item():
    s = pd.Series(["a/b/events-4.json:12", "x/list.json#items[3]", "plain.json"])
    assert clusters.source_file(s).tolist() == ["a/b/events-4.json", "x/list.json", "plain.json"]


def test_stratified_slope_drops_uninformative_strata():
    t = scale.spread_table(make_pulls())
    one = t[t["cluster_nodes"] == 6]
    res = scale.stratified_log_slope(one, "pulled_range_s", n_boot=50)
    assert res["strata"] == 0 and res["dropped"]["one cluster size"] == len(IMAGES)


def test_relative_pull_time_is_per_image():
    df = make_pulls()
    rel = scale.relative_pull_time(df)
    assert rel.groupby([df["run"], df["image_key"]]).median().tolist() == pytest.approx([1.0] * len(IMAGES))


# --------------------------------------------------------------------------- real archived data


def _raw_pulled_times(path, tag):
    """Pulled timestamps of one image's real pulls, read straight off the event lines."""
    seen, times = set(), []
    for line in path.read_text().splitlines():
        if '"reason":"Pulled"' not in line or f':{tag}\\"' not in line or "Successfully pulled" not in line:
            continue
        obj = json.loads(line)
        if obj["metadata"]["uid"] in seen:
            continue
        seen.add(obj["metadata"]["uid"])
        times.append(pd.Timestamp(obj.get("eventTime") or obj["firstTimestamp"]))
    return times


def test_spread_on_archived_data_matches_the_raw_event_lines(raw):
    run = catalog.get("pulling/run1")
    nodes = 8
    (events,) = run.files_of("events", [nodes])
    result = archive.load_run(run, [nodes], raw=raw)
    df, _ = analysable_pulls(result.records)
    table = scale.spread_table(df)
    assert table["resolution_s"].eq(1.0).all()  # core/v1 timestamps
    largest = table.loc[table["size_bytes"].idxmax()]
    times = _raw_pulled_times(raw / run.source / events.path, largest["image_key"])
    assert len(times) == largest["pulls"] == nodes
    assert largest["pulled_range_s"] == (max(times) - min(times)).total_seconds()
    secs = pd.Series([(t - min(times)).total_seconds() for t in times])
    assert largest["pulled_iqr_s"] == pytest.approx(secs.quantile(0.75) - secs.quantile(0.25))
    assert largest["pulled_range_s"] > 1  # a resolved spread: the 19 GB image's pods finish seconds apart


# --------------------------------------------------------------------------- images whose tag encodes no size


def test_an_image_without_size_in_its_tag_is_grouped_by_image_with_its_transferred_size():
    df = make_pulls().assign(image_size_reported=lambda d: d["size_bytes"].astype(float) / 50)
    apps = df[df["size_bytes"] == IMAGES[0]].assign(size_bytes=pd.NA, layers=pd.NA, tag="spack", run="exp/apps",
                                                     image_key="app:spack")
    table = scale.spread_table(pd.concat([df, apps], ignore_index=True))
    app = table[table["run"] == "exp/apps"]
    assert len(app) == 3 and set(app["size_source"]) == {scale.SIZE_TRANSFERRED}
    assert app["size_gb"].tolist() == pytest.approx([IMAGES[0] / 50 / 1e9] * 3)
    assert set(table.loc[table["run"] == "exp/run1", "size_source"]) == {scale.SIZE_BUILT}
    assert "1 image(s): transferred" in scale.size_markdown(table)
    assert verdict_of(apps).verdict in {"supported", "partly supported"}


def test_an_archived_application_run_is_analysed(raw):
    """pulling-test/streaming: spack-built apps whose tags encode no size (failed before: no analysable pulls)."""
    by_run, _ = pulls.load_for_analysis(["pulling-test/streaming"], [4, 8, 16], "pull_wait_s", require_size=False,
                                        progress=False)
    df = by_run["pulling-test/streaming"]
    table = scale.spread_table(df)
    assert table["image_key"].nunique() == 4 and set(table["size_source"]) == {scale.SIZE_TRANSFERRED}
    assert (table["size_gb"] > 0.1).all()
    v = scale.verdict_scale_variation(table, df, n_boot=200)
    assert v.verdict != "not testable here", v.reason


def test_coverage_says_which_sizes_are_missing_and_handles_one_size():
    runs = [catalog.get("pulling/run1")]
    sizes = scale.coverage(runs, make_pulls(sizes=(4,)), [4, 8])
    assert sizes == {"listed": [4, 8], "covered": [4], "unavailable": [8]}
    text = scale.coverage_markdown(sizes)
    assert "one size only" in text and "not available here:** 8" in text


def test_cluster_notes_name_incomplete_clusters():
    df = make_pulls()
    df = df.drop(df.index[:2])  # two pods of the first image at 3 nodes lost
    notes = scale.cluster_notes(scale.cluster_table(scale.spread_table(df)))
    assert "exp/run1 at 3 nodes (coverage down to 0.33" in notes
