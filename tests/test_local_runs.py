"""The analysis side of the local backend, on records written here (no root, no services needed)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pullstudy.studies import figures, local_conditions
from pullstudy.studies.claims import reported_not_judged
from pullstudy.sources.local import source as source_local
from pullstudy.sources.local import measure as local

MB = 1_000_000


def _record(seq: int, snapshotter: str, size: int, content: str, pull_s: float, read_s: float | None) -> dict:
    tag = f"2-layers-size-{size}-bytes"
    lazy = snapshotter == "stargz"
    row = {
        "study": "local", "run": "t", "condition": f"storage=disk,link=loopback,snapshotter={snapshotter}",
        "backend": "local", "cluster_nodes": 1, "node": "here",
        "image": f"127.0.0.1:5000/pullstudy/{content}{'-esgz' if lazy else ''}:{tag}", "tag": tag, "layers": 2,
        "size_bytes": size, "content": content, "image_size_reported": 2000 if lazy else size,
        "pull_s": pull_s, "pull_wait_s": pull_s, "cache_hit": False,
        "pulling_at": "2026-11-29T12:00:00+00:00", "pulled_at": "2026-11-29T12:00:01+00:00", "started_at": None,
        "source": f"raw/records.jsonl:{seq + 1}", "pod": None, "scheduled_at": None, "study_image": True,
        "fetch_s": None if lazy else pull_s * 0.6, "unpack_s": None if lazy else pull_s * 0.4,
        "repetition": seq % 3, "sequence": seq, "storage": "disk", "link": "loopback", "link_mbit_measured": None,
        "containerd_version": "1.6.20~ds1", "snapshotter": snapshotter, "root_fstype": "ext4", "root_device": "/dev/x",
    }
    if read_s is not None:
        row.update(read_s=read_s, read_bytes=size)
    return row


def _write_run(folder: Path, rows: list[dict]) -> Path:
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def eager_lazy(tmp_path) -> pd.DataFrame:
    """Eager pulls of 2 s + 0.1 s read against lazy pulls of 0.1 s + 2.2 s read, per image, with noise."""
    rng = np.random.default_rng(0)
    rows, seq = [], 0
    for content in ("random", "zeros"):
        for size in (8 * MB, 32 * MB):
            scale = size / (8 * MB)
            for _ in range(6):
                rows.append(_record(seq, "overlayfs", size, content, 2.0 * scale * rng.uniform(0.95, 1.05),
                                    0.1 * rng.uniform(0.9, 1.1)))
                rows.append(_record(seq + 1, "stargz", size, content, 0.1 * rng.uniform(0.9, 1.1),
                                    2.2 * scale * rng.uniform(0.95, 1.05)))
                seq += 2
    return local.load_local_run(_write_run(tmp_path / "run", rows))


def test_time_to_useful_work_is_pull_plus_read_and_the_cost_moves(eager_lazy):
    records = local_conditions.with_time_to_useful_work(eager_lazy)
    assert np.allclose(records["ttuw_s"], records["pull_s"] + records["read_s"])
    pull = local_conditions.compare_by_content(records, "snapshotter", "overlayfs", "stargz", time="pull_s", n_boot=200)
    work = local_conditions.compare_by_content(records, "snapshotter", "overlayfs", "stargz", time="ttuw_s", n_boot=200)
    assert set(pull) == set(work) == {"random", "zeros"}
    for content in pull:
        assert pull[content].overall.ci_low > 10  # ~20x by construction
        assert work[content].overall.ci_high < 1  # ~0.92x: slower overall once the reads are counted
        assert set(pull[content].pulls["content"]) == {content}  # same tag, other content: never pooled


def test_compare_by_content_records_tables_and_metrics(eager_lazy):
    class Recorder:
        def __init__(self):
            self.tables, self.metrics = {}, {}

        def table(self, df, name):
            self.tables[name] = df

        def metric(self, name, value):
            self.metrics[name] = value

    out = Recorder()
    local_conditions.compare_by_content(eager_lazy, "snapshotter", "overlayfs", "stargz", out=out, label="x-", n_boot=100)
    assert set(out.tables) == {"x-speedup-per-image-random", "x-speedup-per-image-zeros"}
    assert set(out.metrics["x-overall_speedup[random]"]) == {"ratio", "ci_low", "ci_high", "images", "within_ci_low",
                                                            "within_ci_high", "replicates", "noise_floor"}
    assert out.metrics["x-overall_speedup[zeros]"]["images"] == 2


def test_a_run_recorded_before_read_s_existed_loads_with_it_empty(tmp_path):
    rows = [_record(i, "overlayfs", 8 * MB, "zeros", 1.0 + i / 10, None) for i in range(3)]
    df = local.load_local_run(_write_run(tmp_path / "old", rows))
    assert list(df.columns) == local.LOCAL_COLUMNS and len(df) == 3
    assert df["read_s"].isna().all() and df["read_bytes"].isna().all() and df["pull_s"].notna().all()
    csv = tmp_path / "old" / "records.csv"
    df.drop(columns=["read_s", "read_bytes"]).to_csv(csv, index=False)
    again = local.load_local_run(tmp_path / "old")  # records.csv without the columns: same answer
    assert again["read_s"].isna().all() and list(again.columns) == local.LOCAL_COLUMNS


def test_the_pull_and_read_chart_stacks_the_medians(eager_lazy):
    random_ = eager_lazy[eager_lazy["content"] == "random"]
    chart = figures.pull_and_read_chart(random_)
    spec = chart.to_dict()
    assert spec["title"]["text"].startswith("Where the time goes")
    assert "24 pulls" in spec["title"]["subtitle"]
    data = pd.DataFrame(chart.data)
    assert set(data["part"]) == {"overlayfs: pull", "overlayfs: read", "stargz: pull", "stargz: read"}
    assert set(data["image_label"]) == {"8 MB", "32 MB"}
    lazy_read = data[(data["part"] == "stargz: read") & (data["image_label"] == "32 MB")]["seconds"].item()
    expected = random_[(random_["snapshotter"] == "stargz") & (random_["size_bytes"] == 32 * MB)]["read_s"].median()
    assert lazy_read == pytest.approx(expected)
    assert spec["encoding"]["y"]["title"] == "Median seconds: pull + read every file"


def test_local_run_names_say_which_snapshotters():
    eager = local.LocalGrid(sizes_bytes=(MB,), layers=(1,))
    both = local.LocalGrid(sizes_bytes=(MB,), layers=(1,), snapshotters=("overlayfs", "stargz"))
    assert "stargz" not in source_local.run_name("04-image-streaming", eager)
    assert "overlayfs-stargz" in source_local.run_name("04-image-streaming", both)
    assert both.pulls() == 2 * eager.pulls()
    with pytest.raises(ValueError, match="snapshotters must be a non-empty subset"):
        local.LocalGrid(sizes_bytes=(MB,), layers=(1,), snapshotters=("soci",))


# --- a run folder left by an earlier attempt: reuse, resume, afresh or refuse -----------------------------

GRID = local.LocalGrid(sizes_bytes=(4 * MB,), layers=(2,), contents=("random",), storage=("disk",), repetitions=3)


def _attempt(folder: Path, grid: local.LocalGrid, status: str, records: int, torn: bool = False) -> Path:
    """A run folder as local.run leaves it: run.json with the grid and status, and its complete records."""
    rows = [_record(i, "overlayfs", 4 * MB, "random", 1.0, 0.1) | {"repetition": i} for i in range(records)]
    _write_run(folder, rows)
    if torn:
        with open(folder / "raw" / "records.jsonl", "a") as f:
            f.write('{"study": "local", "run": "t", "condi')
    (folder / "run.json").write_text(json.dumps({"status": status, "grid": json.loads(json.dumps(asdict(grid))),
                                                 "records": records}))
    return folder


def test_a_failed_attempt_that_recorded_nothing_is_measured_afresh(tmp_path):
    plan = source_local.plan_run(_attempt(tmp_path / "r", GRID, "failed", 0), GRID)
    assert plan.action == "measure" and plan.records == 0 and "recorded nothing" in plan.reason
    assert source_local.plan_run(tmp_path / "absent", GRID).action == "measure"


def test_an_unfinished_attempt_of_the_same_grid_is_resumed_with_its_complete_records(tmp_path):
    for status in ("failed", "interrupted", "running"):  # running: the process was killed
        plan = source_local.plan_run(_attempt(tmp_path / status, GRID, status, 2, torn=True), GRID)
        assert plan.action == "resume" and plan.records == 2, status  # the torn last line is not a record
        assert f"recorded 2 of {GRID.pulls()} pulls" in plan.reason


def test_a_finished_run_is_reused_and_only_a_different_grid_is_refused(tmp_path):
    assert source_local.plan_run(_attempt(tmp_path / "done", GRID, "complete", 3), GRID).action == "reuse"
    again = source_local.plan_run(tmp_path / "done", GRID, reuse=False)
    assert again.action == "refuse" and "reuse=False" in again.reason
    other = local.LocalGrid(**{**asdict(GRID), "repetitions": 5, "rate_mbit": 50.0})
    plan = source_local.plan_run(_attempt(tmp_path / "other", other, "failed", 2), GRID)
    assert plan.action == "refuse" and "2 records of a different grid (differs in rate_mbit, repetitions" in plan.reason
    assert "pass run_dir=" in plan.reason
    assert source_local.plan_run(_attempt(tmp_path / "empty-other", other, "failed", 0), GRID).action == "measure"
    orphan = _write_run(tmp_path / "orphan", [_record(0, "overlayfs", 4 * MB, "random", 1.0, 0.1)])
    assert "no run.json" in source_local.plan_run(orphan, GRID).reason
    with pytest.raises(local.LocalRunError, match="different grid"):  # measure refuses before starting anything
        source_local.measure("03-local-ssd", {**asdict(GRID), "repetitions": 5, "rate_mbit": 50.0},
                           run_dir=tmp_path / "done", progress=False)


def test_a_broken_record_before_the_last_line_is_an_error_naming_the_line(tmp_path):
    folder = _attempt(tmp_path / "r", GRID, "failed", 2)
    path = folder / "raw" / "records.jsonl"
    path.write_bytes(b"not json\n" + path.read_bytes())
    with pytest.raises(local.LocalRunError, match=r"records.jsonl:1: not a complete record"):
        local.recorded(folder)


def test_run_names_differ_for_settings_the_readable_part_leaves_out():
    assert source_local.run_name("02", GRID) != source_local.run_name("02", local.LocalGrid(**{**asdict(GRID),
                                                                                           "rate_mbit": 50.0}))
    assert source_local.run_name("02", GRID) == source_local.run_name("02", local.LocalGrid(**asdict(GRID)))


def test_after_a_local_run_the_claims_table_says_local_runs_are_reported_not_judged(tmp_path):
    from pullstudy.report import page
    from pullstudy.studies.claims import UNTESTED_REASON
    folder = tmp_path / "03-local-ssd"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "notebook": "03-local-ssd", "metrics": {"local_run": "03-local-ssd_64MB"}, "verdicts": [], "excluded": {},
        "charts": [], "tables": []}))
    table = page.collect_verdict_table(tmp_path).set_index("claim_id")
    ssd = table.loc["ssd-speedup"]
    assert ssd["verdict"] == "not testable here" and ssd["notebook"] == "03-local-ssd"
    assert "study 03 ran on the local backend (run 03-local-ssd_64MB): local runs are reported, not judged" \
        in ssd["reason"]
    assert table.loc["size-growth", "reason"] == UNTESTED_REASON.format(study="01")  # other studies: not run
    assert reported_not_judged("03-local-ssd", {"overall_speedup": 1.2}) == []  # an archive run
    assert {v.claim_id for v in reported_not_judged("04-image-streaming", {"local_run": "r"})} == {
        "streaming-synthetic", "streaming-apps", "streaming-ml", "soci-example"}


def _local_records(seed, tmpfs_factor, repetitions=5):
    rng = np.random.default_rng(seed)
    rows = []
    for rep in range(repetitions):
        for storage, f in (("disk", 1.0), ("tmpfs", tmpfs_factor)):
            for size in (64e6, 256e6):
                v = size / 1e8 / f * np.exp(rng.normal(0, 0.05))
                rows.append({"study_image": True, "cache_hit": False, "pull_s": v, "pull_wait_s": v,
                             "size_bytes": int(size), "layers": 4, "tag": f"4-layers-size-{int(size)}-bytes",
                             "image": f"127.0.0.1:5000/x:4-layers-size-{int(size)}-bytes", "content": "zeros",
                             "storage": storage, "repetition": rep, "run": "r", "cluster_nodes": 1,
                             "image_size_reported": int(size)})
    return pd.DataFrame(rows)


def test_replicate_runs_give_the_local_noise_floor_and_a_replication():
    first, second = _local_records(0, 1.5), _local_records(1, 1.5)
    comp = local_conditions.compare_by_content(first, "storage", "disk", "tmpfs", replicates=[second], n_boot=300)["zeros"]
    assert comp.clusters == {"baseline": 5, "treatment": 5}  # the repetitions are the replicates within a run
    assert len(comp.replications) == 1 and "[replicate 2]" in comp.replications[0].treatment
    assert set(comp.nulls["status"]) == {"compared"} and len(comp.nulls) == 2  # disk vs disk, tmpfs vs tmpfs
    spread = comp.nulls["speedup"].map(lambda r: max(r, 1 / r)).max()
    assert comp.floor.factor == pytest.approx(spread) and comp.floor.factor < 1.2
    assert "noise floor between re-runs" in comp.effect().text()
    alone = local_conditions.compare_by_content(first, "storage", "disk", "tmpfs", n_boot=300)["zeros"]
    assert alone.nulls is None and alone.floor is None


def test_measure_replicates_refuses_a_bad_count():
    with pytest.raises(ValueError, match="local_replicates"):
        source_local.measure_replicates("03-local-ssd", None, 0)
