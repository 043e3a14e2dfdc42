"""The analysis side of the local backend, on records written here (no root, no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pullstudy import figures, localstudy
from pullstudy.backends import local

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
    records = localstudy.with_time_to_useful_work(eager_lazy)
    assert np.allclose(records["ttuw_s"], records["pull_s"] + records["read_s"])
    pull = localstudy.compare_by_content(records, "snapshotter", "overlayfs", "stargz", time="pull_s", n_boot=200)
    work = localstudy.compare_by_content(records, "snapshotter", "overlayfs", "stargz", time="ttuw_s", n_boot=200)
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
    localstudy.compare_by_content(eager_lazy, "snapshotter", "overlayfs", "stargz", out=out, label="x-", n_boot=100)
    assert set(out.tables) == {"x-speedup-per-image-random", "x-speedup-per-image-zeros"}
    assert set(out.metrics["x-overall_speedup[random]"]) == {"ratio", "ci_low", "ci_high", "images"}
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
    assert "stargz" not in localstudy.run_name("04-image-streaming", eager)
    assert "overlayfs-stargz" in localstudy.run_name("04-image-streaming", both)
    assert both.pulls() == 2 * eager.pulls()
    with pytest.raises(ValueError, match="snapshotters must be a non-empty subset"):
        local.LocalGrid(sizes_bytes=(MB,), layers=(1,), snapshotters=("soci",))
