"""The record-source interface: archive and local sources give one schema, arms from any source compare.

Real components throughout: the archived events of ``pulling/run1`` from data/raw, and local runs as
``pullstudy.sources.local.measure`` leaves them on disk (records.jsonl + run.json), reused by the local
source exactly as a finished run is (no root or services needed).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pullstudy.studies import comparison_study
from pullstudy import records, sources
from pullstudy.sources import interface
from pullstudy.sources.local import measure as local
from pullstudy.report.output import StudyOutput
from pullstudy.sources.archive.source import ArchiveSource
from pullstudy.sources.local.source import LocalSource, run_name
from test_local_runs import _record, _write_run

MB = 1_000_000
GRID = local.LocalGrid(sizes_bytes=(4 * MB,), layers=(2,), contents=("random",), storage=("disk", "tmpfs"),
                       repetitions=3)
PARAMS = {"cluster_nodes": [4], "time_column": "pull_s", "equivalence_margin": 0.10, "n_boot": 200, "seed": 0,
          "claimed_speedup": 1.25}


def _finished_run(runs_dir: Path, notebook: str, grid: local.LocalGrid, tag: str | None = None) -> Path:
    """A finished local run of ``grid`` (disk and tmpfs pulls of one image) where the local source looks for it."""
    rows, seq = [], 0
    for rep in range(grid.repetitions):
        for storage, seconds in (("disk", 2.0), ("tmpfs", 1.0)):
            row = _record(seq, "overlayfs", 4 * MB, "random", seconds * (1 + 0.01 * rep), 0.1)
            row.update(storage=storage, repetition=rep, condition=f"storage={storage},link=loopback")
            if tag:
                layers, size = records.decode_tag(tag)
                row.update(tag=tag, layers=layers, size_bytes=size, image=f"127.0.0.1:5000/pullstudy/random:{tag}")
            rows.append(row)
            seq += 1
    folder = _write_run(runs_dir / run_name(notebook, grid), rows)
    (folder / "run.json").write_text(json.dumps({"status": "complete", "grid": json.loads(json.dumps(asdict(grid))),
                                                 "records": len(rows)}))
    return folder


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("PULLSTUDY_RUNS_DIR", str(folder))
    return folder


def test_archive_and_local_sources_give_one_schema(runs_dir):
    _finished_run(runs_dir, "03-local-ssd", GRID)
    archived = ArchiveSource("pulling/run1").load([4], time="pull_s", progress=False)
    measured = LocalSource("03-local-ssd", asdict(GRID), where={"storage": "tmpfs"}).load(time="pull_s")
    assert isinstance(ArchiveSource("pulling/run1"), interface.RecordSource)
    assert isinstance(LocalSource("03-local-ssd"), interface.RecordSource)
    for result in (archived, measured):
        assert isinstance(result, interface.SourceResult) and len(result.records)
        assert set(records.RECORD_COLUMNS) | {"size_gb", "image_key"} <= set(result.records.columns)
    for col in records.RECORD_COLUMNS:
        assert archived.records[col].dtype == measured.records[col].dtype, col
    # what each left out, and why: the local source counts the other condition of its run
    assert measured.excluded == {"other conditions of the run than storage=tmpfs": GRID.repetitions}
    assert set(measured.records["storage"]) == {"tmpfs"} and measured.local_run == runs_dir.joinpath(
        run_name("03-local-ssd", GRID)).name
    assert archived.judged and not measured.judged
    assert archived.cluster_sizes[4]["status"] == "analysed" and archived.report_lines[0].startswith("* **pulling/run1**")


def test_arms_from_parameters_and_unknown_backend_refused():
    base, treat = sources.arms("archive", "03-local-ssd", {"baseline_run": "pulling/run1",
                                                            "treatment_run": "pulling/run3"})
    assert (base.id, treat.id) == ("pulling/run1", "pulling/run3")
    base, treat = sources.arms("local", "02-registry-proximity", {"local_grid": None, "local_replicates": 2})
    assert (base.where, treat.where, base.replicates) == ({"link": "rate-limited"}, {"link": "loopback"}, 2)
    base, treat = sources.arms("kube", "03-local-ssd", {"baseline_run": "pulling/run1", "treatment_run": "kube/r"})
    assert (base.kind, base.id, treat.kind, treat.id) == ("archive", "pulling/run1", "kube", "kube/r")
    with pytest.raises(ValueError, match=r"backend='k8s' is not a known source; choose one of archive, local, kube"):
        sources.arms("k8s", "03-local-ssd", {})
    with pytest.raises(ValueError, match="no local comparison is defined"):
        sources.arms("local", "05-layer-similarity", {})


def test_study_with_an_archived_baseline_and_a_local_treatment(runs_dir, tmp_path):
    """Arms from different kinds of source compare like any two runs; the result is reported, not judged."""
    tag = ArchiveSource("pulling/run1").load([4], time="pull_s", progress=False).records["tag"].iloc[0]
    _finished_run(runs_dir, "03-local-ssd", GRID, tag=tag)
    out = StudyOutput("03-local-ssd", tmp_path / "out")
    arms = (ArchiveSource("pulling/run1"), LocalSource("03-local-ssd", asdict(GRID), where={"storage": "tmpfs"}))
    study = comparison_study.study(arms, PARAMS, out)
    assert study.comparison.per_image["image_key"].tolist() == [tag]
    assert study.comparison.treatment == "storage=tmpfs" and study.comparison.baseline == "pulling/run1"
    assert study.comparison.per_image["speedup"].iloc[0] > 1  # a multi-GB archived pull against 1 s here
    assert out.metrics["local_run"] == run_name("03-local-ssd", GRID)
    assert out.exclusions[f"local/{run_name('03-local-ssd', GRID)}: other conditions of the run than storage=tmpfs"] == 3
    judgement = study.verdict()
    assert not judgement.judged and judgement.text().startswith("Local measurement (reported, not judged")
    assert out.verdicts == []  # nothing recorded as a verdict on the upstream claim
    table = out.finish()
    assert set(table["claim_id"]) == {"ssd-speedup"} and set(table["verdict"]) == {"not testable here"}
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert len(study.overview()) == 2  # no catalog conditions table for a local arm: the account and the overall


def test_local_arms_of_one_run_compare_per_content_with_replicates(runs_dir, tmp_path):
    _finished_run(runs_dir, "03-local-ssd", GRID)
    rep2 = runs_dir / (run_name("03-local-ssd", GRID) + "_rep2")  # the second run of the same grid
    _finished_run(runs_dir / "elsewhere", "03-local-ssd", GRID).rename(rep2)
    out = StudyOutput("03-local-ssd", tmp_path / "out")
    arms = sources.arms("local", "03-local-ssd", {"local_grid": asdict(GRID), "local_replicates": 2})
    study = comparison_study.study(arms, PARAMS, out)
    assert list(study.by_content) == ["random"] and study.comparison is study.by_content["random"]
    assert study.comparison.floor is not None and len(study.comparison.replications) == 1
    assert {"speedup-per-image-random", "replicate-runs-random"} <= set(out.tables)
    assert "replicate 2: reused the finished local run" in study.report
