"""The Kubernetes backend, with the official client against a replay API server on 127.0.0.1 (tests/kubeapi.py).

The replayed objects are the archived Node list and kubelet events of pulling/run3 at 4 nodes; the
server cuts the first event watch mid-stream, answers the second with 410 Gone, sends bookmarks and
duplicates, and sends one event per Job only after the Job's pods are deleted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from kubeapi import FakeKube, kubeconfig, read_archived_events  # noqa: E402

from pullstudy.parsers.kubelet_events import parse_events
from pullstudy.paths import PROJECT_ROOT, raw_dir  # noqa: E402
from pullstudy.sources.kube import run
from pullstudy.sources.kube.manifests import KubeParamError, parse_params, study_images

RUN_DIR = "container-chonks/experiments/pulling/metadata/run3/4"
EVENTS = "events-size-4-1731237129.json"
NODES = "nodes-4-1731237117.json"
TOKEN = "FAKE-TOKEN-pullstudy-7f3a91c0-do-not-leak"
COMPARED = ["node", "image", "pod", "pull_s", "pull_wait_s", "cache_hit", "image_size_reported", "pulling_at",
            "pulled_at", "started_at", "scheduled_at"]


def _raw() -> Path:
    path = raw_dir() / RUN_DIR
    if not (path / EVENTS).is_file():
        pytest.skip(f"{path / EVENTS} not here: run `make data`")
    return path


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PULLSTUDY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(run.Recorder, "watch_timeout_s", 1)
    return tmp_path / "runs"


@pytest.fixture
def fake():
    raw = _raw()
    server = FakeKube(json.loads((raw / NODES).read_text())["items"], read_archived_events(raw / EVENTS), TOKEN)
    yield server.start()
    server.close()


def _params(cfg: Path, **kw):
    return parse_params({"study": "03-local-ssd", "kubeconfig": str(cfg), "namespace": "default",
                         "study_run": "pulling/run3", "nodes": 4, "job_timeout_s": 30, **kw})


def _sorted(df):
    return df[COMPARED].sort_values(COMPARED[:4]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------- dry run


def _models(doc: dict):
    from kubernetes import client

    api = client.ApiClient()
    return api._ApiClient__deserialize(doc, {"Job": "V1Job", "DaemonSet": "V1DaemonSet"}[doc["kind"]])


def test_dry_run_prints_plan_and_manifests_the_client_models_accept():
    """No cluster, no kubeconfig: the plan and one Indexed Job per image, one pod per node, fresh pulls."""
    out = subprocess.run([sys.executable, "-m", "pullstudy.report.kube_cli", "--study", "01-pull-size-layers",
                          "-p", "dry_run=true", "-p", "nodes=8", "-p", "repetitions=2", "-p", "cold_cache=true"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    plan, _, rest = out.stdout.partition("\n---\n")
    assert "6 images x 8 nodes x 2 repetitions = 96 pulls in 12 Jobs; estimated" in plan
    docs = list(yaml.safe_load_all(rest))
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert len(jobs) == 12 and [d["kind"] for d in docs].count("DaemonSet") == 1
    for doc in jobs:
        job = _models(doc)
        assert job.spec.completion_mode == "Indexed" and job.spec.completions == job.spec.parallelism == 8
        pod = job.spec.template.spec
        term = pod.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution[0]
        assert term.topology_key == "kubernetes.io/hostname"
        assert term.label_selector.match_labels.items() <= job.spec.template.metadata.labels.items()
        assert pod.containers[0].image_pull_policy == "Always"
        assert job.metadata.labels["pullstudy.io/run"] == docs[0]["metadata"]["labels"]["pullstudy.io/run"]
        assert pod.automount_service_account_token is False and not pod.image_pull_secrets
        assert not pod.containers[0].env and not pod.volumes
    ds = _models(docs[0])
    assert ds.spec.template.spec.volumes[0].host_path.path == "/run/containerd/containerd.sock"
    shown = rest.lower().replace("automountserviceaccounttoken: false", "")
    assert "token" not in shown and "secret" not in shown


GRID = {"sizes_bytes": [1_000_000, 2_000_000], "layers": [1, 2], "contents": ["zeros"]}


def test_dry_run_of_a_crafted_grid_names_the_refs_in_the_users_registry_and_pushes_nothing():
    """push_to: the plan says what will be crafted and pushed; the Jobs pull exactly those references.
    The registry named is unreachable (port 9 on 127.0.0.1): a dry run never contacts it."""
    out = subprocess.run([sys.executable, "-m", "pullstudy.report.kube_cli", "--study", "01-pull-size-layers",
                          "-p", "dry_run=true", "-p", "nodes=2", "-p", "push_to=127.0.0.1:9/lab/pullstudy",
                          "-p", f"grid={json.dumps(GRID)}"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    plan, _, rest = out.stdout.partition("\n---\n")
    assert "4 images x 2 nodes x 1 repetitions" in plan
    assert "first crafted and pushed to 127.0.0.1:9/lab/pullstudy: 4 images, 6 MB before compression" in plan
    pulled = sorted(d["spec"]["template"]["spec"]["containers"][0]["image"] for d in yaml.safe_load_all(rest))
    assert pulled == sorted(f"127.0.0.1:9/lab/pullstudy:{layers}-layers-size-{size}-bytes"
                            for layers in (1, 2) for size in (1_000_000, 2_000_000))


@pytest.mark.registry
def test_a_crafted_grid_is_pushed_to_the_named_registry_then_pulled_and_recorded(runs, fake, tmp_path, monkeypatch):
    """The real crafter pushes the grid to a real registry (docker-registry on 127.0.0.1); the replay
    server's archived pods stand in for the cluster's kubelets pulling those references. The records carry
    the crafted images' sizes and layers, pushed.json their digests as the registry serves them, and the
    registry password given in the environment appears in no file."""
    import requests
    from pullstudy.records import decode_tag
    from pullstudy.sources.local.registry_process import Registry

    password = "REGISTRY-PASSWORD-5e1d-do-not-leak"
    monkeypatch.setenv(run.REGISTRY_USER_ENV, "researcher")
    monkeypatch.setenv(run.REGISTRY_PASSWORD_ENV, password)
    with Registry() as reg:
        p = _params(kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN), study="01-pull-size-layers",
                    study_run=None, push_to=f"{reg.host}/lab/grid", grid=GRID, insecure_registry=True)
        refs = study_images(p)
        for new, archived in zip(refs, sorted(fake.study_pods)):
            fake.stand_in(new, archived)
        folder = run.run(p, progress=False)
        pushed = json.loads((folder / run.PUSHED_FILE).read_text())
        assert [d["reference"] for d in pushed] == refs
        for d in pushed:
            tag = d["reference"].rsplit(":", 1)[1]
            got = requests.head(f"http://{reg.host}/v2/lab/grid/manifests/{tag}", timeout=10, headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == d["digest"]
    doc = json.loads((folder / "run.json").read_text())
    assert doc["status"] == "complete" and doc["environment"]["pushed_images"] == 4
    rec = run.KubeSource(doc["id"]).load([4], progress=False).records
    assert sorted(rec["image"].unique()) == refs and len(rec) == 4 * 4
    for ref, g in rec.groupby("image"):
        layers, size = decode_tag(ref.rsplit(":", 1)[1])
        assert set(g["size_bytes"]) == {size} and set(g["layers"]) == {layers}
    for path in folder.rglob("*"):
        if path.is_file():
            assert password not in path.read_text(errors="replace") and TOKEN not in path.read_text(errors="replace")


def test_bad_parameters_are_one_line_errors():
    for given, says in [({"nodes": 0}, "nodes=0 must be a whole number >= 1"),
                        ({"colour": 1}, "unknown parameter 'colour'"),
                        ({"study_run": "pulling/nope"}, "study_run='pulling/nope' is no catalog run"),
                        ({"namespace": "Bad_NS"}, "namespace='Bad_NS' is not a Kubernetes namespace name"),
                        ({"push_to": "registry.example.org"}, "push_to='registry.example.org' must be host"),
                        ({"push_to": "r.example.org/a:tag"}, "must be host\\[:port\\]/repository \\(no tag\\)"),
                        ({"push_to": "r.example.org/Lab"}, "is not a valid registry/repository"),
                        ({"grid": {"layers": [1]}}, "grid is the grid to craft and push: give push_to"),
                        ({"push_to": "r.example.org/lab", "grid": {"sizes": [1]}}, "keys among sizes_bytes"),
                        ({"push_to": "r.example.org/lab", "grid": {"contents": ["zeros", "random"]}},
                         "put \\{content\\} in it"),
                        ({"push_to": "r.example.org/lab", "images": ["a/b:c"]}, "without images= and study_run=")]:
        with pytest.raises(KubeParamError, match=says):
            study_images(parse_params(given))


# ---------------------------------------------------------------------------------------- replay


def test_replay_records_exactly_the_source_across_drop_410_bookmark_duplicates(runs, fake, tmp_path):
    """0 lost, 0 duplicated: the recorded file parses to exactly the records of the archived source."""
    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    folder = run.run(_params(cfg), progress=False)
    assert fake.faults["dropped"] == 1 and fake.faults["gone"] == 1 and fake.faults["bookmarks"] >= 1
    assert fake.faults["duplicates sent"] > 0 and fake.faults["event after pod deleted"] == 6
    doc = json.loads((folder / "run.json").read_text())
    assert doc["status"] == "complete", doc["incomplete"]
    stats = doc["recording"]["events"]
    assert stats["dropped streams resumed"] == 1 and stats["410 gone, listed again"] == 1
    lines = [json.loads(x) for x in (folder / run.EVENTS_FILE).read_text().splitlines()]
    keys = [(e["metadata"]["uid"], e["metadata"]["resourceVersion"]) for e in lines]
    assert len(keys) == len(set(keys)), "a duplicated event line"
    source = parse_events([_raw() / EVENTS])
    recorded = parse_events([folder / run.EVENTS_FILE])
    assert "duplicate" not in recorded.skipped
    assert len(lines) == source.items - source.skipped["exporter-log"]  # every archived event, once
    assert len(recorded.records) == len(source.records) == 105
    assert _sorted(recorded.records).equals(_sorted(source.records))
    nodes = json.loads((folder / run.NODES_FILE).read_text())
    assert nodes["kind"] == "List" and len(nodes["items"]) == 4
    env = doc["environment"]
    assert env["kubernetes"] == "v1.30.0-replay" and env["kubelet"] and env["container_runtime"]
    lat = json.loads((folder / "latency.json").read_text())
    study = [r for r in lat if "container-chonks" in r["image"]]
    assert len(study) == 6 and all(r["pulls"] == 4 and r["pull_wait_s_p99"] >= r["pull_wait_s_p50"] > 0
                                   and r["startup_s_p50"] is not None for r in study)


def test_rerun_skips_complete_images_and_adds_no_line(runs, fake, tmp_path):
    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    folder = run.run(_params(cfg), progress=False)
    before = (folder / run.EVENTS_FILE).read_text()
    posts = sum(r.startswith("POST") for r in fake.requests)
    assert run.run(_params(cfg), progress=False) == folder
    assert sum(r.startswith("POST") for r in fake.requests) == posts  # no Job created again
    assert (folder / run.EVENTS_FILE).read_text() == before


def test_too_few_nodes_and_unreachable_api_are_one_line_refusals(runs, fake, tmp_path):
    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    with pytest.raises(run.KubeRunError, match=r"^kube backend: 4 of 4 nodes are Ready and schedulable, the run "
                                                r"asks for nodes=5: lower nodes= or add nodes$"):
        run.run(_params(cfg, nodes=5), progress=False)
    dead = kubeconfig(tmp_path / "dead", "http://127.0.0.1:9", TOKEN)
    with pytest.raises(run.KubeRunError, match=r"^kube backend: the API server http://127.0.0.1:9 .* did not "
                                                r"answer \(MaxRetryError\)"):
        run.run(_params(dead, api_timeout_s=2), progress=False)


def test_sigterm_deletes_what_the_run_created_and_keeps_the_events(runs, fake, tmp_path):
    fake.study_pods.clear()  # no Job's pods ever pull: the run waits until it is terminated
    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run.run(_params(cfg, job_timeout_s=60), progress=False)
    folder = next(runs.iterdir())
    assert json.loads((folder / "run.json").read_text())["status"] == "terminated"
    deletes = [r for r in fake.requests if r.startswith("DELETE") and r.endswith(("/jobs", "/pods", "/daemonsets"))]
    assert len(deletes) >= 6  # the three collections, by the run's label, before and after
    assert len((folder / run.EVENTS_FILE).read_text().splitlines()) > 0


# ---------------------------------------------------------------------------------------- notebook 03, no token


@pytest.mark.notebooks
def test_recorded_run_through_notebook_03_against_an_archived_run_leaks_no_token(runs, fake, tmp_path, capfd):
    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    folder = run.run(_params(cfg), progress=True)
    from pullstudy.report import runner

    results = tmp_path / "results"
    rc = runner.main(["--only", "03-local-ssd", "--results", str(results), "-p", "backend=kube",
                         "-p", "baseline_run=pulling/run1", "-p", f"treatment_run=kube/{folder.name}",
                         "-p", "cluster_nodes=[4]", "-p", "n_boot=200"])
    captured = capfd.readouterr()
    assert rc == 0, captured.out[-2000:] + captured.err[-2000:]
    executed = (results / "03-local-ssd" / "03-local-ssd.ipynb").read_text()
    assert f"kube/{folder.name}" in executed and "reported, not judged" in executed  # a comparison table, not a verdict
    for path in [*folder.rglob("*"), *results.rglob("*")]:
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), path
    assert TOKEN not in captured.out + captured.err


def test_an_unreadable_run_json_does_not_hide_the_kube_runs(runs, fake, tmp_path):
    """Parameter checking lists kube runs among the catalog's: another folder's broken run.json is passed over."""
    from pullstudy.report import parameters

    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    folder = run.run(_params(cfg), progress=False)
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text("{not json")
    assert [r.id for r in run.kube_runs()] == [f"kube/{folder.name}"]
    assert parameters.check("03-local-ssd", "treatment_run", f"kube/{folder.name}") == f"kube/{folder.name}"


def test_recorded_runs_are_listed_with_their_catalog_id_and_status(runs, fake, tmp_path, capsys):
    from pullstudy.report import kube_cli

    assert kube_cli.main(["--list"]) == 0
    assert "no recorded kube runs" in capsys.readouterr().out
    folder = run.run(_params(kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)), progress=False)
    assert kube_cli.main(["--list"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"kube/{folder.name}") and " complete " in line and "nodes=4" in line


def test_a_recorded_run_needs_backend_kube_in_every_pull_time_notebook(runs, fake, tmp_path):
    """With the archive's backend a recorded run is refused in one line, so it is never mixed in unawares."""
    from pullstudy.report import parameters

    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    rid = f"kube/{run.run(_params(cfg), progress=False).name}"
    given = {"01-pull-size-layers": {"size_run": rid}, "03-local-ssd": {"treatment_run": rid},
             "04-image-streaming": {"treatment_run": rid}, "07-cluster-scale": {"runs": ["pulling/run1", rid]}}
    for stem, overrides in given.items():
        defaults = parameters.notebook_parameters(PROJECT_ROOT / "notebooks" / f"{stem}.ipynb")
        with pytest.raises(parameters.ParameterError, match='names a run recorded on a live cluster: set backend="kube"'):
            parameters.validate(stem, {**defaults, **overrides}, base=PROJECT_ROOT / "notebooks")
        assert parameters.validate(stem, {**defaults, **overrides, "backend": "kube"},
                                   base=PROJECT_ROOT / "notebooks")["backend"] == "kube"


@pytest.mark.notebooks
def test_a_recorded_run_through_notebooks_01_04_07_is_reported_not_judged(runs, fake, tmp_path, capfd):
    """backend="kube" in studies 01, 04 and 07: the recorded run analysed like an archived one, beside one."""
    import pandas as pd
    from pullstudy.report import runner

    cfg = kubeconfig(tmp_path / "kubeconfig", fake.url, TOKEN)
    rid = f"kube/{run.run(_params(cfg), progress=False).name}"
    results = tmp_path / "results"
    rc = runner.main(["--only", "01-pull-size-layers", "--only", "04-image-streaming", "--only", "07-cluster-scale",
                      "--results", str(results), "--no-progress", "-p", "backend=kube", "-p", "n_boot=200",
                      "-p", f"size_run={rid}", "-p", f"layers_run={rid}", "-p", "baseline_run=pulling/run1",
                      "-p", f"treatment_run={rid}", "-p", f"runs=[\"pulling/run1\", \"{rid}\"]",
                      "-p", "cluster_nodes=[4]"])
    captured = capfd.readouterr()
    assert rc == 0, captured.out[-3000:] + captured.err[-3000:]
    claims = pd.read_csv(results / "claims.csv")
    for stem, claim in (("01-pull-size-layers", "size-growth"), ("04-image-streaming", "streaming-synthetic"),
                        ("07-cluster-scale", "scale-variation")):
        metrics = json.loads((results / stem / "metrics.json").read_text())
        assert metrics["metrics"]["recorded_run"] == rid, stem
        row = claims[claims["claim_id"] == claim].iloc[0]
        assert row["verdict"] == "not testable here" and "recorded on a live cluster" in row["reason"], (stem, row)
        assert rid in (results / stem / f"{stem}.ipynb").read_text()
    pulls = pd.read_csv(results / "01-pull-size-layers" / "size-medians.csv")
    assert len(pulls) and pulls["n"].sum() > 0  # the recorded pulls were analysed, not only named
    for path in [*runs.rglob("*"), *results.rglob("*")]:
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), path
    assert TOKEN not in captured.out + captured.err
