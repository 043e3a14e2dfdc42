"""Reading container sets: good images read, bad files and tags named and left out, writes atomic."""

import json
import shutil

import pytest

from pullstudy.images import oci_manifests

SET = "container-chonks/experiments/similarity/data/containers/spack"


@pytest.fixture
def damaged(tmp_path, raw):
    """Two real images, plus a truncated file, a file without manifests, an index and a manifest without layers."""
    src = raw / SET / "ghcr.io/converged-computing"
    for name in ("ensemble-osu", "ensemble-lammps"):
        shutil.copytree(src / name, tmp_path / "ghcr.io/converged-computing" / name)
    good = json.loads((src / "ensemble-osu" / oci_manifests.LAYOUT_FILE).read_text())
    (tmp_path / "r/truncated").mkdir(parents=True)
    text = json.dumps(good)
    (tmp_path / "r/truncated" / oci_manifests.LAYOUT_FILE).write_text(text[: len(text) // 2])
    (tmp_path / "r/empty").mkdir(parents=True)
    (tmp_path / "r/empty" / oci_manifests.LAYOUT_FILE).write_text(json.dumps({"tags": ["x"]}))
    tag = next(iter(good["manifests"]))
    index = {"manifests": {"multi": {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                     "manifests": []},
                           "nolayers": {"schemaVersion": 2, "mediaType": "x"},
                           tag: good["manifests"][tag]},
             "configs": {}}
    (tmp_path / "r/mixed").mkdir(parents=True)
    (tmp_path / "r/mixed" / oci_manifests.LAYOUT_FILE).write_text(json.dumps(index))
    return tmp_path


def test_bad_files_and_tags_are_named_and_left_out(damaged):
    s = oci_manifests.read_set(damaged, "test")
    assert s.images == ["ghcr.io/converged-computing/ensemble-lammps:spack",
                        "ghcr.io/converged-computing/ensemble-osu:spack", "r/mixed:spack"]
    problems = dict(s.problems)
    assert "not valid JSON" in problems[str(damaged / "r/truncated" / oci_manifests.LAYOUT_FILE)]
    assert problems[str(damaged / "r/empty" / oci_manifests.LAYOUT_FILE)] == "no manifests in the file"
    assert "image index" in problems["r/mixed:multi"]
    assert "not a schema 2 image manifest" in problems["r/mixed:nolayers"] or "lack" in problems["r/mixed:nolayers"]
    assert "no config history" in problems["r/mixed:spack"]
    assert set(s.history["image"]) == set(s.images) - {"r/mixed:spack"}


def test_layer_table_matches_the_manifest(raw):
    s = oci_manifests.read_set(raw / SET)
    osu = json.loads((raw / SET / "ghcr.io/converged-computing/ensemble-osu" / oci_manifests.LAYOUT_FILE).read_text())
    rows = s.layers[s.layers["uri"] == "ghcr.io/converged-computing/ensemble-osu"]
    assert rows["digest"].tolist() == [layer["digest"] for layer in osu["manifests"]["spack"]["layers"]]
    assert rows["position"].tolist() == list(range(len(rows)))


def test_created_by_normalisation_matches_identical_steps():
    a = oci_manifests.content_digest("RUN  apt-get install\t-y  Foo")
    assert a == oci_manifests.content_digest("run apt-get install -y foo") == oci_manifests.content_digest("RUNapt-getinstall-yfoo")
    assert a != oci_manifests.content_digest("RUN apt-get install -y bar")


def test_write_image_round_trips_and_merges_tags(tmp_path):
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "layers": [{"digest": "sha256:" + "a" * 64, "size": 10, "mediaType": "x"}]}
    config = {"history": [{"created_by": "RUN true"}]}
    oci_manifests.write_image(tmp_path, "localhost:5000/x", "one", manifest, config)
    oci_manifests.write_image(tmp_path, "localhost:5000/x", "two", manifest, None)
    s = oci_manifests.read_set(tmp_path)
    assert s.images == ["localhost:5000/x:one", "localhost:5000/x:two"]
    assert ("localhost:5000/x:two", "no config history: left out of the content similarity") in s.problems
    assert not list(tmp_path.rglob("*.part"))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        oci_manifests.read_set(tmp_path / "nothing")
