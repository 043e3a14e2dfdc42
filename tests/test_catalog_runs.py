"""Every catalog run is what its own events say it is, and every requested cluster size is accounted for.

A wrong study file or registry in a catalog entry does not crash anything: every pull is then taken for
a system pod's and thrown away. So the pulled images, the ground truth, are checked against the entry:
here for every run whose event files are present, and in ``archive.load_run`` for any run read later.
"""

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pullstudy.data import catalog
from pullstudy.studies import pulls
from pullstudy.sources.archive import runs as archive
from pullstudy.parsers.kubelet_events import parse_events
from pullstudy.paths import raw_dir
from pullstudy.report.output import StudyOutput

from test_kubelet_events import CAPTURE_FAILED

pytestmark = pytest.mark.slow

RUNS = catalog.load()


def _present_event_files(run: catalog.Run) -> list[Path]:
    return [raw_dir() / run.source / f.path for f in run.files_of("events")
            if (raw_dir() / run.source / f.path).is_file()]


PRESENT = [r for r in RUNS if _present_event_files(r)]


def test_runs_with_event_files_here_are_checked():
    """The parametrized check below must not pass by covering nothing."""
    assert {"pulling/run1", "pulling-test/run1", "pulling-test/without-streaming"} <= {r.id for r in PRESENT}


@pytest.mark.parametrize("run", PRESENT, ids=[r.id for r in PRESENT])
def test_the_events_pull_the_study_files_images_from_the_catalogs_registry(run):
    images = archive.study_images(run)
    assert images, f"{run.id}: its study file {run.study_file} is not here or lists no image"
    rec = parse_events(_present_event_files(run)).records
    study = rec[rec["image"].isin(images) & ~rec["cache_hit"]]
    pulled_hosts = Counter(archive.image_host(i) for i in rec["image"])
    assert len(study) > 0, (f"{run.id}: no pull of an image of its study file {run.study_file} in its events; "
                            f"the events pulled from {dict(pulled_hosts)}: fix its catalog entry")
    assert {archive.image_host(i) for i in study["image"]} == {run.registry_host}, run.id
    assert {archive.image_host(i) for i in images} == {run.registry_host}, f"{run.id}: study file vs catalog"


def test_every_run_has_a_registry_host_matching_its_registry():
    for run in RUNS:
        assert run.registry_host == catalog.REGISTRY_HOSTS[run.registry], run.id


def test_every_study_file_here_names_images_of_the_catalogs_registry():
    checked = 0
    for run in RUNS:
        images = archive.study_images(run)
        if images is None:
            continue
        assert images and {archive.image_host(i) for i in images} == {run.registry_host}, run.id
        checked += 1
    assert checked >= 15


# ---------------------------------------------------------------- pulling-test/run3: a real event of the run

# One Pulled event of experiments/pulling-test/metadata/run3/4/events-size-4-1727889595.json (upstream,
# commit ed0c577; that file is not in the mirror here), trimmed of its labels and annotations.
RUN3_PULLED = {
    "metadata": {"name": "container-pull-0-cfgnw.17fab2aaf932425c", "namespace": "default",
                 "uid": "a05a5ba8-a98d-493e-9532-16f520a0183c", "resourceVersion": "1082",
                 "creationTimestamp": "2024-10-02T17:24:14Z"},
    "reason": "Pulled",
    "message": 'Successfully pulled image "us-central1-docker.pkg.dev/llnl-flux/converged-computing/container-chonks:'
               '125-layers-size-48702097-bytes" in 6.357s (6.357s including waiting). Image size: 2337086 bytes.',
    "source": {"component": "kubelet", "host": "gke-test-cluster-default-pool-5831cb35-4kj0"},
    "firstTimestamp": "2024-10-02T17:24:14Z", "lastTimestamp": "2024-10-02T17:24:14Z", "count": 1,
    "type": "Normal", "eventTime": None, "reportingComponent": "kubelet",
    "reportingInstance": "gke-test-cluster-default-pool-5831cb35-4kj0",
    "involvedObject": {"kind": "Pod", "namespace": "default", "name": "container-pull-0-cfgnw",
                       "uid": "73d7f0a1-1b2c-41bb-9a33-1024eecb9c9e", "apiVersion": "v1",
                       "fieldPath": "spec.containers{container-pull}"},
}
RUN3_EXPORTER = {**RUN3_PULLED, "metadata": dict(RUN3_PULLED["metadata"], uid="d0b7fb6d-d4b8-43ba-8f59-78e177c06552"),
                 "message": 'Successfully pulled image "ghcr.io/resmoio/kubernetes-event-exporter:latest" in 1.525s '
                            "(1.525s including waiting). Image size: 20956222 bytes.",
                 "involvedObject": dict(RUN3_PULLED["involvedObject"], namespace="monitoring",
                                        name="event-exporter-6bf9c87d4d-hnlfh", uid="d196ddbe")}


def _raw_copy(tmp_path: Path, run: catalog.Run, events: dict[int, list[str]]) -> Path:
    """A data/raw of its own: the run's real study file, and the given event file texts per size."""
    raw = tmp_path / "raw"
    study = raw / run.source / run.study_file
    study.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(raw_dir() / run.source / run.study_file, study)
    for n, texts in events.items():
        for f, text in zip(run.files_of("events", [n]), texts):
            path = raw / run.source / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return raw


def test_pulling_test_run3_is_catalogued_with_the_images_it_pulled(tmp_path):
    run = catalog.get("pulling-test/run3", RUNS)
    raw = _raw_copy(tmp_path, run, {4: [json.dumps(RUN3_EXPORTER) + "\n" + json.dumps(RUN3_PULLED) + "\n"]})
    result = archive.load_run(run, [4], raw=raw)
    study = result.records[result.records["study_image"]]
    assert len(study) == 1 and study.iloc[0]["tag"] == "125-layers-size-48702097-bytes"
    assert run.registry_host == "us-central1-docker.pkg.dev" and run.study_file.endswith("studies/run2.json")


# ---------------------------------------------------------------- load_run refuses a wrong entry

def test_load_run_refuses_a_run_whose_events_pull_none_of_its_study_images(raw):
    right = catalog.get("pulling/run1", RUNS)
    wrong = dataclasses.replace(right, study_file="experiments/pulling/studies/run2.json",
                                registry=catalog.ARTIFACT_REGISTRY, registry_host="us-central1-docker.pkg.dev")
    with pytest.raises(archive.CatalogMismatch) as err:
        archive.load_run(wrong, [4])
    text = str(err.value)
    assert text.startswith("pulling/run1: none of its 110 pulls is an image of its study file "
                           "experiments/pulling/studies/run2.json")
    assert "ghcr.io/converged-computing/container-chonks-run1 (24)" in text and "CONDITIONS" in text
    assert "registry hosts seen: " in text and "ghcr.io (25 pulls)" in text


def test_load_run_refuses_study_images_from_another_registry_than_the_entry_says(raw):
    wrong = dataclasses.replace(catalog.get("pulling/run1", RUNS), registry_host="us-central1-docker.pkg.dev")
    with pytest.raises(archive.CatalogMismatch, match=r"pulling/run1: the catalog says its images come from "
                                                      r"us-central1-docker.pkg.dev .* from ghcr.io"):
        archive.load_run(wrong, [4])


def test_load_run_without_the_study_file_still_refuses_a_wrong_registry(tmp_path, run1_4_lines):
    """pulling-aws has no files here: when they come, a wrong entry must fail loudly, study file or not."""
    run = dataclasses.replace(catalog.get("pulling-aws/run1", RUNS), registry_host="us-central1-docker.pkg.dev")
    raw = tmp_path / "raw"
    (f,) = run.files_of("events", [4])
    (raw / run.source / f.path).parent.mkdir(parents=True)
    (raw / run.source / f.path).write_text("\n".join(run1_4_lines))  # ghcr.io images, as the real run pulled
    with pytest.raises(archive.CatalogMismatch, match="pulling-aws/run1: .* from ghcr.io"):
        archive.load_run(run, [4], raw=raw)
    right = catalog.get("pulling-aws/run1", RUNS)
    assert archive.load_run(right, [4], raw=raw).records["study_image"].sum() == 24


# ---------------------------------------------------------------- every requested cluster size is reported

def test_every_requested_cluster_size_gets_a_status_and_reason(raw, tmp_path):
    result = archive.load_run("pulling/run1", [3, 4, 32])
    assert set(result.cluster_sizes) == {3, 4, 32}
    assert result.cluster_sizes[3]["status"] == "not read"
    assert result.cluster_sizes[3]["reason"].startswith("not in the catalog for this run")
    assert result.cluster_sizes[4] == {"status": "read", "reason": "", "complete": True}
    assert result.cluster_sizes[32]["reason"].startswith("event files not available here")

    out = StudyOutput("test", tmp_path / "out")
    _, report = pulls.load_for_analysis(["pulling/run1"], [3, 4, 32], "pull_wait_s", out, progress=False)
    sizes = out.metrics["cluster_sizes[pulling/run1]"]
    assert sizes["4"]["status"] == "analysed" and sizes["4"]["pulls"] == 24
    assert sizes["3"]["status"] == sizes["32"]["status"] == "not analysed"
    assert "3 not analysed (not in the catalog for this run" in report
    assert "32 not analysed (event files not available here" in report and "4 analysed" in report


def test_a_failed_capture_is_an_exclusion_and_its_size_is_incomplete(tmp_path, monkeypatch, raw):
    """pulling/without-streaming as archived: at 4 nodes one capture failed and one has events, at 64 the
    only capture here failed. The study goes on, and says so."""
    run = catalog.get("pulling/without-streaming", RUNS)
    events_4 = (raw / "container-chonks/experiments/pulling-test/metadata/without-streaming/4/"
                "events-size-4-1728011091.json").read_text()  # real events of the same images
    failed_4 = CAPTURE_FAILED["experiments/pulling/metadata/without-streaming/4/events-size-4-1731262744.json"]
    failed_64 = CAPTURE_FAILED["experiments/pulling/metadata/without-streaming/64/events-size-64-1731267328.json"]
    assert [Path(f.path).name for f in run.files_of("events", [4])] == \
        ["events-size-4-1731262744.json", "events-size-4-1731262749.json"]
    test_raw = _raw_copy(tmp_path, run, {4: [failed_4, events_4], 64: [failed_64]})
    monkeypatch.setenv("PULLSTUDY_RAW_DIR", str(test_raw))

    result = archive.load_run(run, [4, 8, 64])
    assert result.cluster_sizes[4]["status"] == "read" and "event capture failed" in result.cluster_sizes[4]["reason"]
    assert result.cluster_sizes[64] == {"status": "not read", "complete": False,
                                        "reason": f"event capture failed: {failed_64.strip()}"}
    assert result.skipped["event-capture-failed"] == 2

    out = StudyOutput("test", tmp_path / "out")
    loaded, report = pulls.load_for_analysis([run.id], [4, 8, 64], "pull_wait_s", out, require_size=False,
                                             progress=False)
    assert len(loaded[run.id]) > 0 and set(loaded[run.id]["cluster_nodes"]) == {4}
    for text in (failed_4, failed_64):
        assert out.exclusions[f"{run.id}: event capture failed: {text.strip()}"] == 1
        assert f"event capture failed: {text.strip()} (1 file)" in report
    sizes = out.metrics[f"cluster_sizes[{run.id}]"]
    assert sizes["64"]["status"] == "not analysed" and sizes["64"]["complete"] is False
    assert sizes["8"]["reason"].startswith("event files not available here")
    assert sizes["4"]["status"] == "analysed"
