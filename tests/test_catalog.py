"""The catalog lists every upstream pulling run, agrees with the manifest and with the runs' own nodes."""

import json
from pathlib import Path

import pytest

from pullstudy.data import catalog, fetch
from pullstudy.sources.archive import runs as archive


@pytest.fixture(scope="module")
def runs():
    return catalog.load()


def test_committed_catalog_is_a_fresh_build_of_the_manifest():
    manifest = fetch.load_manifest()
    fresh = catalog.to_json(catalog.build(manifest), catalog.build_sets(manifest), catalog.build_gpu_clusters(manifest))
    committed = json.loads(catalog.catalog_path().read_text())
    assert committed == json.loads(json.dumps(fresh)), "run `make catalog` and commit data/catalog.json"


def test_every_pulling_file_of_the_manifest_is_in_exactly_one_run(runs):
    listed = [f.path for r in runs for f in r.files]
    assert len(listed) == len(set(listed))
    manifest = {f.path for f in fetch.load_manifest().files if "/metadata/" in f.path and "/pulling" in f.path}
    assert set(listed) == manifest


def test_all_upstream_runs_are_listed_available_or_not(runs):
    ids = {r.id for r in runs}
    for expected in ("pulling/run1", "pulling/run2", "pulling/run3", "pulling/run4", "pulling/streaming",
                     "pulling/without-streaming", "pulling-test/run1", "pulling-test/run3", "pulling-aws/run1",
                     "pulling-test/test/n1-standard-64"):
        assert expected in ids
    assert catalog.get("pulling/run1", runs).node_counts == (4, 8, 16, 32, 64, 128, 256)
    assert catalog.get("pulling-test/test/n1-standard-16", runs).node_counts == (4,)


def test_node_count_comes_from_the_folder_even_when_the_name_lacks_it(runs):
    run = catalog.get("pulling-test/run1", runs)
    unnamed = [f for f in run.files if "events-size--" in f.path]
    assert unnamed and all(f.cluster_nodes == int(Path(f.path).parent.name) for f in unnamed)


def test_conditions_agree_with_the_runs_own_node_labels(runs, raw):
    """What the catalog says of a run is what its nodes said of themselves."""
    checked = 0
    for run in runs:
        for f in run.files_of("nodes"):
            path = raw / run.source / f.path
            if not path.is_file():
                continue
            items = json.loads(path.read_text())["items"]
            labels = items[0]["metadata"]["labels"]
            assert labels["node.kubernetes.io/instance-type"] == run.machine_type, f.path
            ssd = labels.get("cloud.google.com/gke-ephemeral-storage-local-ssd") == "true"
            assert ssd == (run.ephemeral_storage == catalog.LOCAL_SSD), f.path
            if run.provider == "GKE" and run.image_streaming is not None:
                streaming = labels.get("cloud.google.com/gke-image-streaming") == "true"
                assert streaming == run.image_streaming, f.path
            assert len(items) >= f.cluster_nodes, f.path
            checked += 1
    assert checked > 40


def test_select_by_condition(runs):
    streaming = {r.id for r in catalog.select(runs, image_streaming=True, image_content=catalog.SYNTHETIC)}
    assert streaming == {"pulling/run4", "pulling-test/run4"}
    assert {r.id for r in catalog.select(runs, ephemeral_storage=catalog.LOCAL_SSD)} == \
        {"pulling/run3", "pulling-test/run3"}
    with pytest.raises(KeyError, match="colour"):
        catalog.select(runs, colour="blue")
    with pytest.raises(KeyError, match="known runs"):
        catalog.get("pulling/run9", runs)


def test_a_run_without_conditions_is_an_error(tmp_path):
    m = fetch.load_manifest()
    extra = fetch.DataFile("container-chonks", "experiments/pulling/metadata/run9/4/events-size-4-1.json", "0" * 40, 1)
    with pytest.raises(ValueError, match="run9"):
        catalog.build(fetch.Manifest(m.sources, m.files + (extra,)))


def test_archive_reports_unavailable_clusters_instead_of_dropping_them(raw):
    result = archive.load_run("pulling/run1", [4, 32])
    assert set(result.records["cluster_nodes"].unique()) == {4}
    assert result.unavailable == ["container-chonks/experiments/pulling/metadata/run1/32/events-size-32-1731222322.json"]


def test_archive_marks_the_study_images_from_the_study_file(raw):
    rec = archive.load_run("pulling/run1", [4]).records
    study = rec[rec["study_image"]]
    assert set(study["tag"]) == set(json.loads((raw / "container-chonks/experiments/pulling/studies/run1.json")
                                               .read_text())["tags"])
    assert (study["content"] == "zeros").all() and (rec.loc[~rec["study_image"], "content"] == "unknown").all()
    assert (rec["backend"] == "archive").all() and (rec["run"] == "pulling/run1").all()


def test_every_similarity_and_container_size_file_is_in_a_set():
    sets = catalog.load_sets()
    listed = [f for s in sets for f in s.files]
    assert len(listed) == len(set(listed))
    wanted = {f.path for f in fetch.load_manifest().files
              if "experiments/similarity/" in f.path or "container-sizes/" in f.path}
    assert set(listed) == wanted
    assert {s.id for s in sets} >= {"similarity/containers", "similarity/performance-study", "similarity/spack"}
    with pytest.raises(KeyError, match="known sets"):
        catalog.get_set("similarity/nothing", sets)


def test_every_gpu_node_list_is_a_catalog_gpu_cluster():
    clusters = catalog.load_gpu_clusters()
    wanted = {f.path for f in fetch.load_manifest().files if "/gpu/" in f.path and f.path.endswith(".json")
              and "container-sizes" not in f.path}
    assert {c["path"] for c in clusters} == wanted
    assert {c["provider"] for c in clusters} == {"GKE", "EKS", "AKS"}
    assert len({c["id"] for c in clusters}) == len(clusters)
