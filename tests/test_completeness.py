"""The completeness ledger: pods the harness created against Pulled events kept, on real and synthetic data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pullstudy.data import catalog
from pullstudy.studies import completeness, pulls
from pullstudy.sources.archive import runs as archive
from pullstudy.studies.claims import Verdict
from pullstudy.report.page import write_index
from pullstudy.report.output import StudyOutput

URI = "ghcr.io/converged-computing/container-chonks-run1"
SMALL = "9-layers-size-1176249324-bytes"


def _records(counts: dict[str, tuple[int, int]], nodes: int = 4, run: str = "pulling/run1") -> pd.DataFrame:
    """Pull records as the parser makes them: ``tag -> (timed pulls, cache hits)`` at one cluster size."""
    rows = []
    for tag, (pulled, hits) in counts.items():
        for i in range(pulled + hits):
            rows.append({"run": run, "cluster_nodes": nodes, "image": f"{URI}:{tag}", "tag": tag,
                         "node": f"node-{i}", "cache_hit": i >= pulled, "study_image": True})
    rows.append({"run": run, "cluster_nodes": nodes, "image": "gke.gcr.io/gke-metrics-agent:1.0",
                 "tag": "1.0", "node": "node-0", "cache_hit": False, "study_image": False})
    return pd.DataFrame(rows)


@pytest.fixture
def synthetic_ledger(raw: Path) -> pd.DataFrame:
    """pulling/run1's real study file (6 images) at 4 nodes; one image seen on 3 of its 4 pods."""
    tags = catalog_tags()
    counts = {tag: (4, 0) for tag in tags}
    counts[SMALL] = (3, 0)
    counts[tags[-1]] = (2, 2)  # two pods on nodes that already had the image
    return completeness.ledger("pulling/run1", _records(counts), [4])


def catalog_tags() -> list[str]:
    run = catalog.get("pulling/run1")
    return [ref.rsplit(":", 1)[1] for ref in completeness.expected_images(run, 4)]


def test_three_of_four_pods_is_75_percent_and_flagged(synthetic_ledger: pd.DataFrame) -> None:
    assert list(synthetic_ledger.columns) == completeness.COLUMNS
    assert len(synthetic_ledger) == 6 and set(synthetic_ledger["expected"]) == {4}
    small = synthetic_ledger.set_index("image_key").loc[SMALL]
    assert (small["observed_pulled"], small["cache_hits"], small["share"], small["complete"]) == (3, 0, 0.75, False)
    assert (small["layers"], small["size_bytes"]) == (9, 1176249324)
    hits = synthetic_ledger.set_index("image_key").loc[catalog_tags()[-1]]
    assert (hits["observed_pulled"], hits["cache_hits"], hits["share"], hits["complete"]) == (2, 2, 1.0, True)
    assert int((~synthetic_ledger["complete"]).sum()) == 1
    assert completeness.overall_share(synthetic_ledger) == {"pulling/run1": pytest.approx(23 / 24)}


def test_an_image_with_no_events_is_a_cell_with_nothing_observed(raw: Path) -> None:
    tags = catalog_tags()
    led = completeness.ledger("pulling/run1", _records({t: (4, 0) for t in tags[1:]}), [4])
    row = led.set_index("image_key").loc[tags[0]]
    assert (row["observed_pulled"], row["share"], row["complete"]) == (0, 0.0, False)
    assert "gke-metrics-agent:1.0" not in set(led["image_key"])  # system pods are not study cells


def test_caveat_names_the_cells_below_the_threshold(synthetic_ledger: pd.DataFrame) -> None:
    text = completeness.caveat(synthetic_ledger, 0.8)
    assert text.startswith("rests on 1 of 6 cells below 80% complete")
    assert "(Pulled events observed / pods the harness created; by run pulling/run1: 1 of 6)" in text
    assert text.endswith(f"least complete: pulling/run1 at 4 nodes, {SMALL}: 3 of 4 pods")
    scoped = completeness.caveat(synthetic_ledger, 0.8, scope="the runs this notebook read")
    assert scoped.startswith("the runs this notebook read have 1 of 6 cells below 80% complete")
    assert completeness.caveat(synthetic_ledger, 0.7) == ""
    assert completeness.caveat(None) == "" and completeness.caveat(synthetic_ledger.iloc[:0]) == ""


@pytest.mark.parametrize("bad", [0, 1.5, -0.2, "80%", True])
def test_bad_threshold_is_a_one_line_error(synthetic_ledger: pd.DataFrame, bad) -> None:
    with pytest.raises(ValueError, match="completeness threshold must be a share in"):
        completeness.caveat(synthetic_ledger, bad)
    with pytest.raises(ValueError, match="completeness threshold"):
        StudyOutput("x", "/tmp/unused-completeness-out", completeness_threshold=bad)


def test_missing_study_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"studies/run1.json: cannot read the study file of pulling/run1.*make data"):
        completeness.ledger("pulling/run1", _records({}), [4], raw=tmp_path)


def test_real_data_16_node_pulling_test_is_incomplete_and_pulling_run1_is_not(raw: Path) -> None:
    test_run = archive.load_run("pulling-test/run1", [16])
    led = completeness.ledger("pulling-test/run1", test_run.records, [16])
    assert len(led) == 38 and set(led["expected"]) == {16}
    assert int((~led["complete"]).sum()) == 15 and led["share"].min() == 0.125
    assert completeness.overall_share(led)["pulling-test/run1"] == pytest.approx(449 / 608)

    full = completeness.ledger("pulling/run1", archive.load_run("pulling/run1", [4]).records, [4])
    assert len(full) == 6 and full["complete"].all() and (full["share"] == 1.0).all()
    assert completeness.caveat(full) == ""


def test_surplus_events_never_fill_another_cell(raw: Path) -> None:
    """pulling-test/run1 at 4 nodes holds a repeated job (up to 8 events for 4 pods): shown, not averaged away."""
    led = completeness.ledger("pulling-test/run1", archive.load_run("pulling-test/run1", [4]).records, [4])
    assert led["share"].max() == 2.0
    assert completeness.overall_share(led)["pulling-test/run1"] == 1.0


def test_load_for_analysis_records_the_ledger_and_verdicts_carry_the_caveat(tmp_path: Path, raw: Path) -> None:
    out = StudyOutput("07-cluster-scale", tmp_path / "07")
    pulls.load_for_analysis(["pulling/run1", "pulling-test/run1"], [4, 8, 16], "pull_wait_s", out, progress=False)
    table = pd.read_csv(tmp_path / "07" / "completeness.csv")
    assert set(table["run"]) == {"pulling/run1", "pulling-test/run1"} and len(table) == 18 + 114
    assert {"completeness"} <= set(out.tables) and "completeness" in out.charts
    assert (tmp_path / "07" / "completeness.png").stat().st_size > 0
    shares = out.metrics["completeness"]
    assert shares["pulling/run1"] == 1.0 and shares["pulling-test/run1"] == pytest.approx(0.845, abs=0.001)

    v = out.verdict(Verdict("scale-variation", "supported", "spread grows with cluster size."))
    assert v.reason.startswith("spread grows with cluster size; the runs this notebook read have 17 of 132 "
                               "cells below 80% complete (Pulled events observed / pods the harness created; "
                               "by run pulling-test/run1: 17 of 114, pulling/run1: 0 of 18)")
    again = out.verdict(v)  # recording the same verdict again does not repeat the caveat
    assert again.reason.count("cells below") == 1
    # a claim resting on the complete run only gets no caveat; on the other, a precise one
    assert out.verdict(Verdict("size-growth", "supported", "r"), runs=["pulling/run1"]).reason == "r"
    layers = out.verdict(Verdict("layers-no-effect", "supported", "r"), runs=["pulling-test/run1"])
    assert layers.reason.startswith("r; rests on 17 of 114 cells below 80% complete")
    # a run the ledger could not cover is said in the verdict, not an error that stops the notebook
    unknown = out.verdict(Verdict("size-growth", "supported", "r"), runs=["pulling/run9"])
    assert unknown.reason == "r; the completeness of pulling/run9 could not be assessed (no ledger for it)"

    medians = out.table(pulls.median_summary(
        pulls.load_for_analysis(["pulling-test/run1"], [16], "pull_wait_s", None, progress=False)[0]
        ["pulling-test/run1"], ["cluster_nodes", "size_bytes", "layers"], n_boot=50), "medians")
    written = pd.read_csv(tmp_path / "07" / "medians.csv")
    # no run column while two runs were read: one completeness column per run, never a guess
    per_run = {"completeness[pulling-test/run1]", "completeness[pulling/run1]", "incomplete_in"}
    assert len(written) == len(medians) and per_run <= set(written.columns)
    flagged = written["incomplete_in"].fillna("")
    assert (flagged == "pulling-test/run1").any() and (flagged == "").any()
    assert (written["completeness[pulling/run1]"].dropna() == 1.0).all()

    out.write()
    page = write_index(tmp_path).read_text()
    assert "Completeness of the event record" in page
    assert "<td>pulling-test/run1</td><td class=\"num\">84.5%</td>" in page
    assert "<td>pulling/run1</td><td class=\"num\">100.0%</td>" in page


def test_mostly_complete_runs_get_no_caveat(tmp_path: Path, raw: Path) -> None:
    out = StudyOutput("03-local-ssd", tmp_path / "03")
    pulls.load_for_analysis(["pulling/run1", "pulling/run3"], [4, 8, 16], "pull_wait_s", out, progress=False)
    assert out.metrics["completeness"] == {"pulling/run1": 1.0, "pulling/run3": 1.0}
    v = out.verdict(Verdict("ssd-speedup", "supported", "faster on SSD"))
    assert v.reason == "faster on SSD"


def test_chart_has_title_axis_titles_and_units(synthetic_ledger: pd.DataFrame) -> None:
    spec = completeness.chart(synthetic_ledger).to_dict()
    assert "Completeness of the event record" in spec["title"]["text"]
    enc = spec["layer"][1]["encoding"]
    assert enc["x"]["title"] == "Expected pulls observed (% of the pods the harness created)"
    assert enc["y"]["title"] == "Run · cluster size" and enc["size"]["title"] == "Images"


def test_a_run_without_event_files_here_is_a_reported_skip(tmp_path: Path, raw: Path, monkeypatch) -> None:
    """Cells of files this machine lacks are not "0% observed": the run is skipped with the reason."""
    empty_raw = tmp_path / "raw"
    study = catalog.get("pulling/run1").study_file
    (empty_raw / "container-chonks" / study).parent.mkdir(parents=True)
    (empty_raw / "container-chonks" / study).write_text((raw / "container-chonks" / study).read_text())
    monkeypatch.setenv("PULLSTUDY_RAW_DIR", str(empty_raw))
    out = StudyOutput("03-local-ssd", tmp_path / "03")
    assert completeness.record(out, {"pulling/run1": archive.load_run("pulling/run1", [4])}, [4]) is None
    assert out.metrics["completeness_skipped"] == {
        "pulling/run1": "no event file of the chosen cluster sizes on this machine (run `make data`)"}
    assert "completeness" not in out.metrics and out.completeness_ledger is None
    assert out.verdict(Verdict("ssd-speedup", "supported", "r")).reason == "r"
