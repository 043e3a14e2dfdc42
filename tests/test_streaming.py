"""Application logs: the parser on real and bad logs; the streaming comparison and its verdict on synthetic data."""

import gzip
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from pullstudy.data import catalog
from pullstudy.parsers.app_logs import (BAD_FORMAT, EMPTY, NO_FLUXTIME, NO_SUBMIT, REPEATED, TRUNCATED,
                                        AppLogError, SkippedLog, parse_app_log, parse_app_logs, parse_elapsed)
from pullstudy.sources.archive.source import load_app_runs
from pullstudy.studies.streaming import streaming_apps_table, verdict_streaming_apps
from pullstudy.sources.archive import runs as archive

RUN = "pulling-test/streaming"


def _logs(raw, run_id=RUN):
    run = catalog.get(run_id)
    return run, [(f, raw / run.source / f.path) for f in run.files_of("app-log")]


def _independent_seconds(text: str, what: str) -> float:
    """The FLUXTIME figure read another way: the last token of the line, split on ':'."""
    lines = [ln for ln in text.splitlines() if ln.startswith(f"FLUXTIME {what} wall time ")]
    assert len(lines) == 1
    parts = [float(p) for p in lines[0].split()[-1].split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


# ---------------------------------------------------------------- real logs


def test_real_logs_parse_and_match_an_independent_reading(raw):
    run, files = _logs(raw)
    images = archive.study_images(run, raw)
    assert files and all(path.is_file() for _, path in files)
    for f, path in files:
        rec = parse_app_log(path, run=run.id, cluster_nodes=f.cluster_nodes, images=images, label_root=raw)
        text = path.read_text()
        assert rec["fluxsubmit_s"] == pytest.approx(_independent_seconds(text, "fluxsubmit"))
        assert rec["fluxstart_s"] == pytest.approx(_independent_seconds(text, "fluxstart"))
        assert rec["fluxstart_s"] >= rec["fluxsubmit_s"]  # the instance outlives the job it runs
        # the broker's own timing of the job agrees with GNU time's
        assert rec["broker_run_s"] == pytest.approx(rec["fluxsubmit_s"], abs=0.1)
        assert rec["image"] in images and re.sub(r"\W", "_", rec["image"]) in path.name
        assert f"_{rec['app']}_" in path.name and rec["app"] in rec["image_key"]
        assert rec["source"] == f"{run.source}/{f.path}"


def test_example_log_from_the_brief(raw):
    path = (raw / "container-chonks/experiments/pulling-test/metadata/streaming/4/logs/"
            "us_central1_docker_pkg_dev_llnl_flux_converged_computing_ensemble_amg2023_spack_skylake-22f46202.log")
    rec = parse_app_log(path, images=archive.study_images(catalog.get(RUN), raw))
    assert (rec["app"], rec["image_key"]) == ("amg2023", "ensemble-amg2023:spack-skylake")
    assert rec["fluxsubmit_s"] == pytest.approx(26.68) and rec["fluxstart_s"] == pytest.approx(37.96)


def test_gzip_log_parses_like_the_plain_one(raw, tmp_path):
    _, files = _logs(raw)
    path = files[0][1]
    gz = tmp_path / (path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    a, b = parse_app_log(path), parse_app_log(gz)
    assert (a["fluxsubmit_s"], a["fluxstart_s"], a["app"]) == (b["fluxsubmit_s"], b["fluxstart_s"], b["app"])


def test_load_app_runs_accounts_for_every_listed_log(raw):
    for run_id in ("pulling-test/streaming", "pulling-test/without-streaming", "pulling-test/streaming-test"):
        run = catalog.get(run_id)
        df, skipped, unavailable = load_app_runs([run_id])
        assert len(df) + sum(skipped.values()) + len(unavailable) == len(run.files_of("app-log"))
        assert df["fluxstart_s"].notna().all() and (df["run"] == run_id).all()


def test_load_app_runs_reports_missing_files_and_filters_sizes(raw, tmp_path):
    run, files = _logs(raw)
    keep = [(f, p) for f, p in files if f.cluster_nodes == run.node_counts[0]]
    for f, p in keep[:2]:
        (tmp_path / run.source / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / run.source / f.path)
    df, skipped, unavailable = load_app_runs([RUN], [run.node_counts[0]], raw=tmp_path)
    assert len(df) == 2 and not skipped
    assert sorted(unavailable) == sorted(f"{run.source}/{f.path}" for f, _ in keep[2:])
    assert df["image_key"].isna().all()  # no study file in this raw folder: the image cannot be named


def test_load_app_runs_counts_skips_by_run(raw, tmp_path):
    run, files = _logs(raw)
    for i, (f, p) in enumerate(files[:3]):
        dest = tmp_path / run.source / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"" if i == 0 else p.read_bytes())
    df, skipped, _ = load_app_runs([RUN], raw=tmp_path)
    assert len(df) == 2 and skipped == {f"{RUN}: {EMPTY}": 1}


# ---------------------------------------------------------------- bad input


@pytest.fixture
def real_text(raw):
    return _logs(raw)[1][0][1].read_text()


def _write(tmp_path, content, name="x_ensemble_app_tag-0123abcd.log"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _skip_reason(path):
    with pytest.raises(SkippedLog) as exc:
        parse_app_log(path)
    return exc.value.reason


def test_truncated_before_fluxstart(tmp_path, real_text):
    cut = real_text[: real_text.index("FLUXTIME fluxstart")]
    assert _skip_reason(_write(tmp_path, cut)) == TRUNCATED


def test_truncated_inside_the_last_line(tmp_path, real_text):
    line = next(ln for ln in real_text.splitlines() if ln.startswith("FLUXTIME fluxstart"))
    cut = real_text[: real_text.index(line) + len(line) - 2]  # "...0:37.9" with no newline
    assert _skip_reason(_write(tmp_path, cut)) == TRUNCATED


def test_no_fluxtime_line(tmp_path, real_text):
    body = "\n".join(ln for ln in real_text.splitlines() if not ln.startswith("FLUXTIME")) + "\n"
    assert _skip_reason(_write(tmp_path, body)) == NO_FLUXTIME


def test_no_fluxsubmit_line(tmp_path):
    assert _skip_reason(_write(tmp_path, "FLUXTIME fluxstart wall time 0:37.96\n")) == NO_SUBMIT


def test_repeated_line(tmp_path):
    text = "FLUXTIME fluxsubmit wall time 0:01.00\nFLUXTIME fluxsubmit wall time 0:02.00\n" \
           "FLUXTIME fluxstart wall time 0:05.00\n"
    assert _skip_reason(_write(tmp_path, text)) == REPEATED


def test_empty_and_blank_files(tmp_path):
    assert _skip_reason(_write(tmp_path, b"")) == EMPTY
    assert _skip_reason(_write(tmp_path, "\n  \n", "blank.log")) == EMPTY


def test_binary_file_is_an_error(tmp_path):
    path = _write(tmp_path, b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    with pytest.raises(AppLogError, match="binary"):
        parse_app_log(path)
    with pytest.raises(AppLogError, match="gzip"):
        parse_app_log(_write(tmp_path, gzip.compress(b"FLUXTIME fluxstart")[:12], "cut.log.gz"))


@pytest.mark.parametrize("value", ["26.68s", "0:7.50", "1:75.00", "abc", "", "0:26", "1h2m3s", "-0:01.00"])
def test_unknown_time_format_is_a_counted_skip(tmp_path, value):
    text = f"FLUXTIME fluxsubmit wall time {value}\nFLUXTIME fluxstart wall time 0:37.96\n"
    assert _skip_reason(_write(tmp_path, text)) == BAD_FORMAT


@pytest.mark.parametrize("text,seconds", [
    ("0:26.68", 26.68), ("7:49.33", 469.33), ("12:00.00", 720.0), ("1:02:03.5", 3723.5), ("1:02:03", 3723.0),
    ("10:00:00.25", 36000.25), (" 0:37.96 ", 37.96),
])
def test_elapsed_formats(text, seconds):
    assert parse_elapsed(text) == pytest.approx(seconds)


def test_hours_form_in_a_log(tmp_path):
    text = "start\nFLUXTIME fluxsubmit wall time 1:02:03.5\nFLUXTIME fluxstart wall time 1:02:10.00\n"
    rec = parse_app_log(_write(tmp_path, text))
    assert rec["fluxsubmit_s"] == pytest.approx(3723.5) and rec["fluxstart_s"] == pytest.approx(3730.0)
    assert math.isnan(rec["broker_quorum_s"])  # no broker lines: NaN, not a failure


def test_parse_app_logs_counts_each_skip(tmp_path, real_text):
    good = _write(tmp_path, real_text, "good-00000001.log")
    paths = [good, _write(tmp_path, b"", "e-00000002.log"), _write(tmp_path, "hello\n", "n-00000003.log"),
             _write(tmp_path, real_text[: real_text.index("FLUXTIME fluxstart")], "t-00000004.log")]
    df, skipped = parse_app_logs(paths, run="r", cluster_nodes=4)
    assert len(df) == 1 and df["source"].iloc[0] == str(good)
    assert skipped == {EMPTY: 1, NO_FLUXTIME: 1, TRUNCATED: 1}
    assert str(df["cluster_nodes"].dtype) == "Int64"


def test_image_from_another_registry_is_matched_by_repository_and_tag(tmp_path, real_text):
    images = {"us-central1-docker.pkg.dev/x/y/ensemble-amg2023:spack-skylake",
              "us-central1-docker.pkg.dev/x/y/ensemble-osu:spack-skylake"}
    rec = parse_app_log(_write(tmp_path, real_text, "ghcr_io_z_ensemble_amg2023_spack_skylake-84dbe22e.log"),
                        images=images)
    assert (rec["image"], rec["image_key"], rec["app"]) == (None, "ensemble-amg2023:spack-skylake", "amg2023")
    rec = parse_app_log(_write(tmp_path, real_text, "unknown_image-84dbe22e.log"), images=images)
    assert rec["image_key"] is None and rec["app"] == "unknown_image"


# ---------------------------------------------------------------- the comparison, on synthetic data

KEYS = ("ensemble-aaa:t", "ensemble-bbb:t")
SIZES = (4, 8, 16)


def _pulls(run, median, n_per_size, rng, keys=KEYS, sizes=SIZES):
    rows = []
    for key in keys:
        for n in sizes:
            for v in median * rng.uniform(0.9, 1.1, n_per_size):
                rows.append({"image_key": key, "cluster_nodes": n, "pull_s": v, "pull_wait_s": v * 1.01})
    df = pd.DataFrame(rows)
    df["cluster_nodes"] = df["cluster_nodes"].astype("Int64")
    return df


def _apps(run, wall, keys=KEYS, sizes=SIZES, rng=None):
    rows = [{"run": run, "cluster_nodes": n, "app": k.split(":")[0].split("-")[-1], "image_key": k,
             "fluxsubmit_s": wall * 0.8, "fluxstart_s": wall * (rng.uniform(0.9, 1.1) if rng else 1.0),
             "source": f"{run}/{k}/{n}.log"} for k in keys for n in sizes]
    return pd.DataFrame(rows).astype({"cluster_nodes": "Int64"})


def _table(base_pull, treat_pull, base_wall=None, treat_wall=None, n=6, seed=1, **kw):
    rng = np.random.default_rng(seed)
    pulls = {"B": _pulls("B", base_pull, n, rng), "T": _pulls("T", treat_pull, n, rng)}
    parts = [_apps(r, w, rng=rng) for r, w in (("B", base_wall), ("T", treat_wall)) if w is not None]
    apps = pd.concat(parts, ignore_index=True) if parts else _apps("B", 1.0).iloc[0:0]
    return streaming_apps_table(pulls, apps, "B", "T", n_boot=500, **kw)


def test_table_shape_and_figures():
    t = _table(30.0, 2.0, base_wall=20.0, treat_wall=40.0)
    assert list(t["scope"].value_counts().sort_index().items()) == [("all", 1), ("app", 2), ("cluster", 6)]
    cell = t[(t["scope"] == "cluster")].iloc[0]
    assert cell["n_pulls_baseline"] == 6 and cell["n_logs_baseline"] == 1 and cell["ttuw_unit"] == "run"
    assert cell["ttuw_s_baseline"] == pytest.approx(cell["pull_wait_s_baseline"] + cell["wall_s_baseline"])
    assert cell["pull_speedup"] == pytest.approx(cell["pull_s_baseline"] / cell["pull_s_treatment"])
    assert math.isnan(cell["ttuw_speedup_ci_low"])  # one run per side: nothing to resample
    assert cell["pull_wait_speedup_ci_low"] <= cell["pull_wait_speedup"] <= cell["pull_wait_speedup_ci_high"]
    overall = t[t["scope"] == "all"].iloc[0]
    assert overall["n_pulls_baseline"] == 36 and overall["n_ttuw_baseline"] == 6
    assert overall["ttuw_unit"] == "cluster" and 13 < overall["pull_speedup"] < 17
    assert overall["ttuw_speedup_ci_low"] < overall["ttuw_speedup"] < overall["ttuw_speedup_ci_high"]
    assert set(t[t["scope"] == "app"]["app"]) == {"aaa", "bbb"}
    assert t.attrs["wall"] == "fluxstart_s" and t.attrs["unmatched_logs"] == []


def test_wall_choice_and_unmatched_logs_are_reported():
    rng = np.random.default_rng(0)
    pulls = {"B": _pulls("B", 30.0, 4, rng), "T": _pulls("T", 2.0, 4, rng)}
    apps = pd.concat([_apps("B", 10.0), _apps("T", 10.0)], ignore_index=True)
    apps.loc[0, "image_key"] = pd.NA
    t = streaming_apps_table(pulls, apps, "B", "T", wall="fluxsubmit_s", n_boot=200)
    assert t.attrs["unmatched_logs"] == [apps.loc[0, "source"]]
    first = t[(t["scope"] == "cluster")].iloc[0]
    assert first["n_logs_baseline"] == 0 and math.isnan(first["ttuw_s_baseline"])
    assert t[t["scope"] == "cluster"]["wall_s_treatment"].eq(8.0).all()
    with pytest.raises(KeyError, match="wall"):
        streaming_apps_table(pulls, apps, "B", "T", wall="runtime")
    with pytest.raises(KeyError, match="load_for_analysis"):
        streaming_apps_table(pulls, apps, "B", "other")


def test_sizes_only_one_side_pulled_stay_out_of_the_overall_rows():
    rng = np.random.default_rng(2)
    pulls = {"B": _pulls("B", 30.0, 4, rng), "T": _pulls("T", 2.0, 4, rng, sizes=SIZES[:2])}
    t = streaming_apps_table(pulls, _apps("B", 1.0).iloc[0:0], "B", "T", n_boot=200)
    lone = t[(t["scope"] == "cluster") & (t["cluster_nodes"] == SIZES[2])]
    assert (lone["n_pulls_treatment"] == 0).all() and lone["pull_speedup"].isna().all()
    assert t[t["scope"] == "all"].iloc[0]["n_pulls_baseline"] == 2 * 2 * 4


# ---------------------------------------------------------------- the verdict, every branch


def test_verdict_supported():
    v = verdict_streaming_apps(_table(30.0, 2.0, base_wall=0.5, treat_wall=0.1))
    assert v.verdict == "supported" and v.claim_id == "streaming-apps"
    assert 13 < v.value < 17 and v.ci_low <= v.value <= v.ci_high and v.n == 72


def test_verdict_supported_but_run_time_not_measured():
    v = verdict_streaming_apps(_table(30.0, 2.0))
    assert v.verdict == "supported" and "not measured" in v.reason


def test_verdict_partly_gain_lost_in_the_run():
    v = verdict_streaming_apps(_table(30.0, 2.0, base_wall=60.0, treat_wall=75.0))
    assert v.verdict == "partly supported" and "does not survive" in v.reason
    assert "time to useful work" in v.measured


def test_verdict_partly_figure_differs():
    v = verdict_streaming_apps(_table(30.0, 10.0))
    assert v.verdict == "partly supported" and "by a different amount" in v.reason
    assert verdict_streaming_apps(_table(30.0, 10.0), claimed=3).verdict == "supported"


def test_verdict_not_supported():
    v = verdict_streaming_apps(_table(10.0, 10.0, base_wall=5.0, treat_wall=5.0))
    assert v.verdict == "not supported" and v.ci_low <= 1 <= v.ci_high


def test_verdict_not_testable():
    rng = np.random.default_rng(0)
    pulls = {"B": _pulls("B", 30.0, 4, rng), "T": _pulls("T", 2.0, 4, rng).iloc[0:0]}
    t = streaming_apps_table(pulls, _apps("B", 1.0).iloc[0:0], "B", "T", n_boot=200)
    assert verdict_streaming_apps(t).verdict == "not testable here"
    empty = streaming_apps_table({"B": pulls["T"], "T": pulls["T"]}, _apps("B", 1.0).iloc[0:0], "B", "T")
    assert empty.empty and verdict_streaming_apps(empty).verdict == "not testable here"
