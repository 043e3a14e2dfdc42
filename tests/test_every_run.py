"""Every notebook on every catalog run (or pair) whose event files are present: a result, never a traceback.

A researcher's first move is to point a notebook at another run. Each case below is one such try,
derived from data/catalog.json and the runs' study files rather than typed in:

* 01 and 07 on every run with event files here (``size_run = layers_run = run``; ``runs = [run]``);
* 02, 03 and 04 on every pair: each run with files here against the baseline of its round -- the run
  of the same experiment and image content without streaming, on the boot disk, first by id -- when
  the two share images by their study files (a study file that cannot be read counts as sharing, so
  the notebook run says what is wrong with it). For 04 an application pair also sets the apps runs.

The assertion: the notebook finishes, writes metrics.json, and every claim of the notebook has a
verdict with a reason ("not testable here" included: then the reason says why).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pullstudy.data import catalog
from pullstudy.sources.archive import runs as archive
from pullstudy.studies.claims import CLAIMS
from pullstudy.paths import notebooks_dir, raw_dir
from pullstudy.records import image_key
from pullstudy.report.runner import run_notebooks

pytestmark = pytest.mark.notebooks

NOTEBOOKS = {"01": "01-pull-size-layers", "02": "02-registry-proximity", "03": "03-local-ssd",
             "04": "04-image-streaming", "07": "07-cluster-scale"}
SMALL = {"n_boot": 200}


def _present(runs: list[catalog.Run]) -> list[catalog.Run]:
    """Runs with at least one event file on this machine (`make data` says why others are missing)."""
    av = catalog.availability(runs).query("kind == 'events'")
    here = set(av.loc[av["available"] > 0, "run"])
    return [r for r in runs if r.id in here]


def _images(run: catalog.Run) -> set[str] | None:
    """The run's study images, keyed as the notebooks compare them (tag, or repository:tag for apps)."""
    try:
        refs = archive.study_images(run, raw_dir())
    except ValueError:  # an unreadable study file: the notebook run will name it
        return None
    if refs is None:
        return None
    images = pd.DataFrame({"image": sorted(refs), "tag": [r.rsplit(":", 1)[-1] for r in sorted(refs)]})
    return set(image_key(images))


def _baseline(run: catalog.Run, present: list[catalog.Run]) -> catalog.Run | None:
    """The baseline of the run's round: same experiment and image content, no streaming, boot disk."""
    same = [r for r in present if r.experiment == run.experiment and r.image_content == run.image_content
            and r.image_streaming is False and r.ephemeral_storage.startswith("boot disk")]
    return min(same, key=lambda r: r.id) if same else None


def _pairs(present: list[catalog.Run]) -> list[tuple[catalog.Run, catalog.Run]]:
    pairs = []
    for run in present:
        base = _baseline(run, present)
        if base is None or base.id == run.id:
            continue
        a, b = _images(base), _images(run)
        if a is None or b is None or a & b:
            pairs.append((base, run))
    return pairs


def _cases() -> list:
    runs = catalog.load()
    present = _present(runs)
    cases = []
    for run in present:
        cases.append(pytest.param("01", {"size_run": run.id, "layers_run": run.id}, id=f"01-{run.id}"))
        cases.append(pytest.param("07", {"runs": [run.id]}, id=f"07-{run.id}"))
    for base, run in _pairs(present):
        pair = {"baseline_run": base.id, "treatment_run": run.id}
        for nb in ("02", "03"):
            cases.append(pytest.param(nb, pair, id=f"{nb}-{base.id}-vs-{run.id}"))
        apps = ({"apps_baseline_run": base.id, "apps_treatment_run": run.id} if run.image_content == "real" else {})
        cases.append(pytest.param("04", {**pair, **apps}, id=f"04-{base.id}-vs-{run.id}"))
    return cases


def test_the_catalog_yields_runs_and_pairs(raw):
    """The walk itself: runs present here and at least one pair per kind of image content."""
    present = _present(catalog.load())
    pairs = _pairs(present)
    assert len(present) >= 8
    assert {r.image_content for _, r in pairs} == {"zeros", "real"}
    assert ("pulling/run1", "pulling/run3") in {(a.id, b.id) for a, b in pairs}
    assert ("pulling-test/without-streaming", "pulling-test/streaming") in {(a.id, b.id) for a, b in pairs}


@pytest.mark.parametrize(("notebook", "parameters"), _cases())
def test_notebook_on_every_run(notebook, parameters, tmp_path, raw):
    stem = NOTEBOOKS[notebook]
    (run,) = run_notebooks(notebooks_dir(), tmp_path, only=[stem], parameters={**SMALL, **parameters},
                           progress=False)
    assert run.ok, f"{stem} with {parameters}: {run.error}"
    metrics = json.loads((tmp_path / stem / "metrics.json").read_text())
    verdicts = {}
    for v in metrics["verdicts"]:
        verdicts.setdefault(v["claim_id"], []).append(v)
    own = {cid for cid, claim in CLAIMS.items() if claim.study == notebook}
    assert own <= set(verdicts), f"{stem} with {parameters}: no verdict on {sorted(own - set(verdicts))}"
    for claim_id, vs in verdicts.items():
        for v in vs:
            assert v["reason"].strip(), f"{stem}: verdict on {claim_id} without a reason"
    untestable = metrics["metrics"].get("not_testable", {})
    if notebook in ("01", "07"):  # their parts that cannot be done are listed with the reason
        for claim_id in own:
            for v in verdicts[claim_id]:
                if v["verdict"] == "not testable here":
                    assert untestable.get(claim_id, "?") in v["reason"], (
                        f"{stem}: {claim_id} not testable, but metrics.json 'not_testable' does not say why")
