"""The event parser against real kubelet events and against a corpus of bad input."""

import gzip
import json
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullstudy.parsers.kubelet_events import (DurationError, EventFileError, UnrecognizedMessage,
                                              parse_events, parse_go_duration, parse_pulled_message)
from pullstudy.records import RECORD_COLUMNS, decode_tag, image_tag, split_image

# ---------------------------------------------------------------- Go durations


@pytest.mark.parametrize("text,seconds", [
    ("1h2m3.5s", 3723.5), ("1m8.725s", 68.725), ("998ms", 0.998), ("1.5µs", 1.5e-6), ("1.5μs", 1.5e-6),
    ("1.5us", 1.5e-6), ("300ns", 3e-7), ("0", 0.0), ("0s", 0.0), ("2h45m", 9900.0), (".5s", 0.5),
    ("5.s", 5.0), ("-1.5h", -5400.0), ("+2m", 120.0), ("2m0.912s", 120.912), ("49.657983991s", 49.657983991),
])
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("text", ["", "5", "1x", "1.5 s", "s", "1h2", "abc", "1d", "1h-2m", "--1s", "1..5s", "ms"])
def test_go_durations_rejected(text):
    with pytest.raises(DurationError):
        parse_go_duration(text)


def go_duration_string(ns: int) -> str:
    """Go's time.Duration.String(), for the property test."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(ns, 1_000) + "µs"
    if ns < 1_000_000_000:
        return _trim(ns, 1_000_000) + "ms"
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    out = (f"{h}h" if h else "") + (f"{m}m" if h or m else "")
    return out + _trim(rem, 1_000_000_000) + "s"


def _trim(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    digits = len(str(unit)) - 1
    frac_s = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{frac_s}" if frac_s else f"{whole}"


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=10 * 24 * 3_600_000_000_000))
def test_go_duration_round_trip(ns):
    text = go_duration_string(ns)
    assert parse_go_duration(text) == pytest.approx(ns / 1e9, rel=1e-12, abs=1e-12), text


# ---------------------------------------------------------------- messages and tags

def test_pulled_message_forms():
    m = parse_pulled_message('Successfully pulled image "a/b:c" in 998ms (1.673s including waiting). '
                             "Image size: 12923526 bytes.")
    assert (m.image, m.cache_hit, m.pull_s, m.pull_wait_s, m.image_size_reported) == \
        ("a/b:c", False, 0.998, 1.673, 12923526)
    old = parse_pulled_message('Successfully pulled image "a/b:c" in 49.657983991s')
    assert old.pull_s == pytest.approx(49.657983991) and old.pull_wait_s is None and old.image_size_reported is None
    oldest = parse_pulled_message('Successfully pulled image "a/b:c"')
    assert oldest.pull_s is None and oldest.pull_wait_s is None and not oldest.cache_hit
    hit = parse_pulled_message('Container image "a/b:c" already present on machine')
    assert hit.cache_hit and hit.pull_s is None and hit.image == "a/b:c"
    with pytest.raises(UnrecognizedMessage):
        parse_pulled_message("Pulled something else")
    with pytest.raises(DurationError):
        parse_pulled_message('Successfully pulled image "a/b:c" in 5xs (5s including waiting). Image size: 1 bytes.')


def test_image_references_and_tags():
    assert split_image("ghcr.io/x/y:9-layers-size-1176249324-bytes") == \
        ("ghcr.io/x/y", "9-layers-size-1176249324-bytes")
    assert split_image("localhost:5000/x/y") == ("localhost:5000/x/y", None)
    assert split_image("localhost:5000/x/y:t@sha256:abc") == ("localhost:5000/x/y", "t")
    assert split_image("busybox") == ("busybox", None)
    assert decode_tag("125-layers-size-48702097-bytes") == (125, 48702097)
    assert decode_tag("spack-skylake") == (None, None)
    assert decode_tag(None) == (None, None)


def test_tag_format_encoded_and_decoded_in_one_place():
    """records.image_tag writes what records.decode_tag reads (the crafter and the parser share them)."""
    assert image_tag(125, 48702097) == "125-layers-size-48702097-bytes"
    assert decode_tag(image_tag(9, 1176249324)) == (9, 1176249324)


# ---------------------------------------------------------------- real lines


def _pick(lines, reason, needle="container-chonks-run1"):
    return [line for line in lines if f'"reason":"{reason}"' in line and needle in line]


def _study_set(lines):
    """A real Pulled line and every line of the same pod (Scheduled, Pulling, Pulled, Started...)."""
    pulled = _pick(lines, "Pulled")[0]
    uid = json.loads(pulled)["involvedObject"]["uid"]
    same_pod = [line for line in lines if uid in line]
    return pulled, same_pod


def test_real_file_every_item_accounted_for(raw, run1_4_lines):
    path = raw / "container-chonks/experiments/pulling/metadata/run1/4/events-size-4-1731219229.json"
    result = parse_events(path, label_root=raw, run="pulling/run1", cluster_nodes=4)
    nonblank = [line for line in run1_4_lines if line.strip()]
    pulled_lines = [line for line in nonblank if '"reason":"Pulled"' in line]
    assert result.items == len(nonblank)
    assert len(result.records) == len(pulled_lines)
    used = sum('"reason":"{}"'.format(r) in line for line in nonblank for r in ("Pulling", "Started", "Scheduled"))
    assert sum(result.skipped.values()) + len(result.records) + used == len(nonblank)
    assert list(result.records.columns) == RECORD_COLUMNS
    assert result.records["source"].str.startswith("container-chonks/experiments/").all()


def test_real_file_matches_an_independent_regex_reading(raw, run1_4_lines):
    """The parser's figures equal those read straight off the raw text with a regex."""
    path = raw / "container-chonks/experiments/pulling/metadata/run1/4/events-size-4-1731219229.json"
    rec = parse_events(path).records
    expected = {}
    for line in _pick(run1_4_lines, "Pulled"):
        m = re.search(r'pulled image \\"([^"\\]+)\\" in [^ ]+ \(([^ ]+) including waiting\)', line)
        name = json.loads(line)["involvedObject"]["name"]
        expected[name] = parse_go_duration(m.group(2))
    got = rec[rec["image"].str.contains("container-chonks-run1")]
    assert dict(zip(got["pod"].str.split("/").str[1], got["pull_wait_s"])) == pytest.approx(expected)
    assert not got["cache_hit"].any()
    assert (got["layers"] == 9).all()
    assert (got["pull_s"] <= got["pull_wait_s"]).all()
    timed = got.dropna(subset=["pulling_at", "started_at"])
    assert len(timed) == len(got)
    assert (timed["pulling_at"] <= timed["pulled_at"]).all() and (timed["pulled_at"] <= timed["started_at"]).all()


def test_cache_hits_are_records_never_pulls(run1_4_lines, tmp_path):
    hits = [line for line in run1_4_lines if "already present on machine" in line]
    assert hits, "the real file has cache hits"
    path = tmp_path / "hits.json"
    path.write_text("\n".join(hits) + "\n")
    rec = parse_events(path).records
    assert len(rec) == len(hits)
    assert rec["cache_hit"].all() and rec["pull_s"].isna().all() and rec["pull_wait_s"].isna().all()


# ---------------------------------------------------------------- bad input corpus


@pytest.fixture
def corpus(run1_4_lines):
    """A file of real lines with every kind of damage the exporter's output can have, and what to expect."""
    pulled, pod_lines = _study_set(run1_4_lines)
    event = json.loads(pulled)
    no_reason = dict(event, reason=None)
    del no_reason["reason"]
    no_message = {k: v for k, v in event.items() if k != "message"}
    no_message["metadata"] = dict(event["metadata"], uid="uid-no-message")
    bad_unit = dict(event, message=event["message"].replace(" in ", " in 5xs", 1))
    bad_unit["metadata"] = dict(event["metadata"], uid="uid-bad-unit")
    odd = dict(event, message="Pulled by magic")
    odd["metadata"] = dict(event["metadata"], uid="uid-odd")
    lines = [
        '{"level":"info","time":"2024-11-10T06:10:30Z","message":"Reading config file /data/config.yaml"}',
        "I1110 06:10:30.000000       1 main.go:42] klog text the exporter printed",
        *pod_lines,
        pulled,  # the same event seen twice
        pulled[: len(pulled) // 2],  # truncated JSON
        "",
        json.dumps(no_reason),
        json.dumps(no_message),
        json.dumps(bad_unit),
        json.dumps(odd),
        "[1, 2, 3]",
        "   ",
    ]
    expected = {"not-json": 2, "exporter-log": 1, "duplicate": 1, "missing-reason": 1, "missing-message": 1,
                "bad-duration": 1, "unrecognized-pulled-message": 1, "not-an-object": 1}
    n_pod_pulled = sum('"reason":"Pulled"' in line for line in pod_lines)
    return "\n".join(lines) + "\n", expected, n_pod_pulled, len(pod_lines)


def test_bad_lines_are_counted_by_reason(tmp_path, corpus):
    text, expected, n_pulled, n_pod = corpus
    path = tmp_path / "events.json"
    path.write_text(text)
    result = parse_events(path)
    assert len(result.records) == n_pulled == 1
    assert {k: v for k, v in result.skipped.items() if k != "not-a-pull-event"} == expected
    nonblank = [line for line in text.splitlines() if line.strip()]
    assert result.items + result.skipped["not-json"] == len(nonblank)
    rec = result.records.iloc[0]
    assert rec["pulling_at"] <= rec["pulled_at"] <= rec["started_at"]


def test_gzip_input_equals_plain(tmp_path, corpus):
    text, *_ = corpus
    plain, packed = tmp_path / "e.json", tmp_path / "e.json.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    a, b = parse_events(plain), parse_events(packed)
    assert a.skipped == b.skipped
    assert a.records.drop(columns="source").equals(b.records.drop(columns="source"))


def test_truncated_gzip_names_the_file(tmp_path, corpus):
    text, *_ = corpus
    path = tmp_path / "cut.json.gz"
    path.write_bytes(gzip.compress(text.encode())[:-40])
    with pytest.raises(EventFileError, match="cut.json.gz"):
        parse_events(path)


def test_binary_file_is_an_error(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    with pytest.raises(EventFileError, match="image.png.*binary"):
        parse_events(path)


def test_unknown_format_is_an_error(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("reason,message\nPulled,Successfully pulled image\n")
    with pytest.raises(EventFileError, match="events.csv"):
        parse_events(path)


def test_empty_file_is_a_counted_skip(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("")
    result = parse_events(path)
    assert result.records.empty and list(result.records.columns) == RECORD_COLUMNS
    assert result.skipped == {"empty-file": 1}


def test_kubectl_list_equals_json_lines(tmp_path, run1_4_lines):
    objs = [json.loads(line) for line in run1_4_lines]
    lines_file, list_file = tmp_path / "lines.json", tmp_path / "list.json"
    lines_file.write_text("\n".join(run1_4_lines))
    list_file.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=4))
    a, b = parse_events(lines_file), parse_events(list_file)
    assert a.skipped == b.skipped and len(a.records) == len(b.records) > 0
    assert a.records.drop(columns="source").equals(b.records.drop(columns="source"))
    assert b.records["source"].str.contains(r"#items\[\d+\]").all()


def test_truncated_kubectl_list_is_an_error(tmp_path, run1_4_lines):
    text = json.dumps({"kind": "List", "items": [json.loads(line) for line in run1_4_lines[:50]]}, indent=2)
    path = tmp_path / "list.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(EventFileError, match="list.json.*truncated"):
        parse_events(path)


def test_events_k8s_io_v1_form(tmp_path, run1_4_lines):
    """The newer Event API names the fields differently; the records must not change."""
    pulled, pod_lines = _study_set(run1_4_lines)
    converted = []
    for line in pod_lines:
        o = json.loads(line)
        converted.append({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": o["metadata"], "reason": o["reason"],
            "note": o.get("message"), "regarding": o["involvedObject"], "deprecatedSource": o.get("source"),
            "deprecatedFirstTimestamp": o.get("firstTimestamp"), "eventTime": o.get("eventTime"),
        })
    core, new = tmp_path / "core.json", tmp_path / "new.json"
    core.write_text("\n".join(pod_lines))
    new.write_text("\n".join(json.dumps(c) for c in converted))
    a, b = parse_events(core).records, parse_events(new).records
    assert len(a) == 1 and a.drop(columns="source").equals(b.drop(columns="source"))


def test_duplicates_across_files_of_one_cluster(tmp_path, run1_4_lines):
    """Two exports of the same cluster overlap; each event counts once and joins work across files."""
    half = len(run1_4_lines) // 2
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("\n".join(run1_4_lines[: half + 100]))
    b.write_text("\n".join(run1_4_lines[half:]))
    whole = tmp_path / "whole.json"
    whole.write_text("\n".join(run1_4_lines))
    split, full = parse_events([a, b]), parse_events(whole)
    overlap_events = [line for line in run1_4_lines[half: half + 100] if '"involvedObject"' in line]
    assert split.skipped["duplicate"] == len(overlap_events) > 50
    assert len(split.records) == len(full.records)
    cols = [c for c in RECORD_COLUMNS if c != "source"]
    key = ["pod", "image", "pulled_at"]
    assert split.records[cols].sort_values(key).reset_index(drop=True).equals(
        full.records[cols].sort_values(key).reset_index(drop=True))


def test_old_kubelet_messages_keep_what_they_have(tmp_path, run1_4_lines):
    pulled = json.loads(_pick(run1_4_lines, "Pulled")[0])
    old = dict(pulled, message=re.sub(r" \(.*", "", pulled["message"]))
    oldest = dict(pulled, message=re.sub(r" in .*", "", pulled["message"]))
    oldest["metadata"] = dict(pulled["metadata"], uid="another")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old) + "\n" + json.dumps(oldest) + "\n")
    rec = parse_events(path).records
    assert rec["pull_s"].notna().tolist() == [True, False]
    assert rec["pull_wait_s"].isna().all() and rec["image_size_reported"].isna().all()
    assert (rec["layers"] == 9).all()


# ---------------------------------------------------------------- failed captures, times, malformed objects

# Real archived event files that hold what kubectl printed when the exporter was not ready (their git blob
# ids are checked against data/manifest.json below, so these are the upstream bytes; the mirror here lacks
# these runs' files).
CAPTURE_FAILED = {
    "experiments/pulling/metadata/streaming/16/events-size-16-1731280335.json":
        'Error from server (BadRequest): container "event-exporter" in pod "event-exporter-6bf9c87d4d-w5xgc" '
        "is waiting to start: ContainerCreating\n",
    "experiments/pulling/metadata/streaming/64/events-size-64-1731283080.json":
        'Error from server (BadRequest): container "event-exporter" in pod "event-exporter-6bf9c87d4d-z84zm" '
        "is waiting to start: ContainerCreating\n",
    "experiments/pulling/metadata/without-streaming/4/events-size-4-1731262744.json":
        'Error from server (BadRequest): container "event-exporter" in pod "event-exporter-6bf9c87d4d-j4sr8" '
        "is waiting to start: ContainerCreating\n",
    "experiments/pulling/metadata/without-streaming/64/events-size-64-1731267328.json":
        'Error from server (BadRequest): container "event-exporter" in pod "event-exporter-6bf9c87d4d-67gbs" '
        "is waiting to start: ContainerCreating\n",
    "experiments/pulling-aws/metadata/run1/32/events-size-32-1731218102.json":
        'error: error from server (NotFound): pods "event-exporter-6d778fb78d-qcc59" not found in namespace '
        '"monitoring"\n',
}


def test_the_capture_failures_quoted_here_are_the_archived_files():
    import hashlib

    from pullstudy.data import fetch
    blobs = {f.path: f.git_blob for f in fetch.load_manifest().files}
    for path, text in CAPTURE_FAILED.items():
        b = text.encode()
        assert hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest() == blobs[path], path


@pytest.mark.parametrize("path", sorted(CAPTURE_FAILED))
def test_a_failed_event_capture_is_counted_and_the_other_files_are_read(tmp_path, run1_4_lines, path):
    failed = tmp_path / path
    failed.parent.mkdir(parents=True)
    failed.write_text(CAPTURE_FAILED[path])
    good = tmp_path / "good.json"
    good.write_text("\n".join(run1_4_lines))
    alone = parse_events(good)
    result = parse_events([failed, good], label_root=tmp_path)
    assert len(result.records) == len(alone.records) > 0
    assert result.skipped["event-capture-failed"] == 1 and "not-json" not in result.skipped
    assert result.capture_failed == {path: CAPTURE_FAILED[path].strip()}


@pytest.mark.parametrize("text", [
    "error: You must be logged in to the server (Unauthorized)\n",
    "Unable to connect to the server: dial tcp 10.0.0.1:443: i/o timeout\n",
    "The connection to the server localhost:8080 was refused - did you specify the right host or port?\n",
    "\n  Error from server (NotFound): namespaces \"monitoring\" not found\nsecond line\n",
])
def test_other_kubectl_errors_are_failed_captures_too(tmp_path, text):
    path = tmp_path / "events.json"
    path.write_text(text)
    result = parse_events(path)
    assert result.records.empty and result.skipped == {"event-capture-failed": 1}
    assert list(result.capture_failed.values()) == [text.strip().splitlines()[0].strip()]


@pytest.mark.parametrize("text", ["hello, this is not an event file\n", "warning: Error from server is later\n",
                                  "reason,message\nError from server,x\n"])
def test_text_that_is_not_a_kubectl_error_still_raises_naming_the_file(tmp_path, text):
    path = tmp_path / "notes.json"
    path.write_text(text)
    with pytest.raises(EventFileError, match="notes.json.*no JSON"):
        parse_events(path)


def _pod_events(run1_4_lines):
    """The real Pulling, Pulled and Started events of one study pod, as objects."""
    _, pod_lines = _study_set(run1_4_lines)
    objs = [json.loads(line) for line in pod_lines]
    return {o["reason"]: o for o in objs if o["reason"] in ("Pulling", "Pulled", "Started")}


def _write(tmp_path, objs, name="events.json"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(o) for o in objs) + "\n")
    return path


@pytest.mark.parametrize("pulling,pulled,started,wait_s", [
    ("2024-11-10T06:10:42Z", "2024-11-10T06:10:42.500000Z", "2024-11-10T06:10:43Z", 0.5),  # mixed precision
    ("2024-11-10T08:10:40+02:00", "2024-11-10T06:10:42Z", "2024-11-10T06:10:43.25Z", 2.0),  # an offset
    ("2024-11-10T06:10:40.123456789Z", "2024-11-10T06:10:41Z", "2024-11-10T06:10:41Z", 0.876544),  # nanoseconds
])
def test_times_are_compared_as_utc_instants_not_strings(tmp_path, run1_4_lines, pulling, pulled, started, wait_s):
    ev = _pod_events(run1_4_lines)
    for reason, t in (("Pulling", pulling), ("Pulled", pulled), ("Started", started)):
        ev[reason] = dict(ev[reason], firstTimestamp=t, eventTime=None)
    rec = parse_events(_write(tmp_path, ev.values())).records
    assert len(rec) == 1
    r = rec.iloc[0]
    assert str(rec["pulled_at"].dtype).endswith("UTC]")
    assert r["pulling_at"] is not pd.NaT and r["started_at"] is not pd.NaT
    assert (r["pulled_at"] - r["pulling_at"]).total_seconds() == pytest.approx(wait_s, abs=1e-6)
    assert r["pulling_at"] <= r["pulled_at"] <= r["started_at"]


def test_a_negative_duration_is_a_bad_duration(tmp_path, run1_4_lines):
    ev = _pod_events(run1_4_lines)
    good = ev["Pulled"]
    neg = dict(good, message=re.sub(r" in [^ ]+ \(", " in -5s (", good["message"]),
               metadata=dict(good["metadata"], uid="uid-negative"))
    neg_wait = dict(good, message=re.sub(r"\([^ ]+ including", "(-1m including", good["message"]),
                    metadata=dict(good["metadata"], uid="uid-negative-wait"))
    assert "in -5s (" in neg["message"] and "(-1m including" in neg_wait["message"]
    result = parse_events(_write(tmp_path, [good, neg, neg_wait]))
    assert len(result.records) == 1 and (result.records["pull_s"] > 0).all()
    assert result.skipped["bad-duration"] == 2


def test_malformed_event_objects_are_counted_and_the_good_records_kept(tmp_path, run1_4_lines):
    ev = _pod_events(run1_4_lines)
    good = ev["Pulled"]

    def variant(uid, **fields):
        return dict(good, metadata=dict(good["metadata"], uid=uid), **fields)

    bad = [
        variant("uid-yesterday", eventTime="yesterday"),
        variant("uid-integer", eventTime=1731219229),
        variant("uid-no-offset", eventTime=None, firstTimestamp="2024-11-10T06:10:42"),
        variant("uid-month-13", eventTime=None, firstTimestamp="2024-13-10T06:10:42Z"),
        dict(good, metadata="str"),
        dict(good, metadata=["a", "list"]),
        dict(ev["Pulling"], firstTimestamp="yesterday", metadata=dict(ev["Pulling"]["metadata"], uid="uid-p")),
        variant("uid-odd-fields", involvedObject=dict(good["involvedObject"], uid=["x"], fieldPath=7),
                source={"host": 12}),
    ]
    path = _write(tmp_path, [ev["Pulling"], good, ev["Started"], *bad])
    result = parse_events(path)
    assert result.skipped["bad-time"] == 5 and result.skipped["bad-metadata"] == 2
    assert len(result.records) == 2  # the good Pulled, and the one with odd but harmless fields
    first = result.records.iloc[0]
    assert first["pulling_at"] <= first["pulled_at"] <= first["started_at"]


def test_parse_time_is_strict_rfc3339():
    from datetime import datetime, timezone

    from pullstudy.parsers.kubelet_events import parse_time
    assert parse_time("2024-11-10T06:10:42Z") == datetime(2024, 11, 10, 6, 10, 42, tzinfo=timezone.utc)
    assert parse_time("2024-11-10T08:10:42.5+02:00") == datetime(2024, 11, 10, 6, 10, 42, 500000, tzinfo=timezone.utc)
    for bad in ("yesterday", "now", 1731219229, None, "2024-11-10", "2024-11-10T06:10:42", "2024-11-10T25:00:00Z"):
        assert parse_time(bad) is None, bad


def test_columns_built_directly_equal_typed_records_on_every_event_file():
    """Issue 16: the frame is built in its final dtypes; it must be exactly what typed_records gave."""
    import pandas as pd

    from pullstudy.data import catalog
    from pullstudy.parsers import kubelet_events as K
    from pullstudy.paths import raw_dir
    from pullstudy.records import RECORD_COLUMNS, typed_records

    files = [raw_dir() / r.source / f.path for r in catalog.load() for f in r.files_of("events")]
    files = [p for p in files if p.is_file()]
    if not files:
        pytest.skip("no event files in data/raw: run `make data`")
    real = K._typed_columns
    captured = []
    K.clear_cache()  # every file parsed here, not served from an earlier test's parse
    try:
        K._typed_columns = lambda columns, n: captured.append(columns) or real(columns, n)
        results = [K.parse_events(p) for p in files]
    finally:
        K._typed_columns = real
    assert sum(len(r.records) for r in results) > 0
    for columns, result in zip(captured, results):
        assert list(columns) == RECORD_COLUMNS
        expected = typed_records(pd.DataFrame(columns, columns=RECORD_COLUMNS))
        pd.testing.assert_frame_equal(result.records, expected, check_exact=True)


def test_a_repeated_parse_is_served_by_content_and_each_caller_gets_its_own_copy(tmp_path):
    """Issue 16: parse_events remembers results by file content; a file changed in place (same name, same
    size) is parsed again, and changing a returned frame does not change what the next caller gets."""
    from pullstudy.parsers import kubelet_events as K

    def pulled(pod: str, seconds: str) -> str:
        return json.dumps({"reason": "Pulled", "metadata": {"uid": pod}, "involvedObject": {"name": pod},
                           "source": {"host": "n1"}, "firstTimestamp": "2024-11-10T06:10:42Z",
                           "message": f'Successfully pulled image "r/i:9-layers-size-1-bytes" in {seconds}s'}) + "\n"

    path = tmp_path / "events.json"
    path.write_text(pulled("a", "1.5"))
    K.clear_cache()
    first = K.parse_events(path, run="r1")
    first.records.loc[0, "node"] = "changed by the caller"
    first.skipped["made-up"] += 1
    again = K.parse_events(path, run="r1")
    assert again.records["node"].tolist() == ["n1"] and "made-up" not in again.skipped
    assert K.parse_events(path, run="r2").records["run"].tolist() == ["r2"]  # the context is part of the key
    path.write_text(pulled("a", "2.5"))  # same name and size, new content
    assert K.parse_events(path, run="r1").records["pull_s"].tolist() == [2.5]


# ---------------------------------------------------------------- the typed decode (issue 16)


def _both_ways(paths, contents=None):
    """The parse with the typed decode and with the generic path only (the parser before it)."""
    from pullstudy.parsers import kubelet_events as K

    paths = [paths] if not isinstance(paths, list) else paths
    return K._parse(paths, contents, None, {}, typed=True), K._parse(paths, contents, None, {}, typed=False)


def _assert_same(typed, generic):
    pd.testing.assert_frame_equal(typed.records, generic.records, check_exact=True)
    assert list(typed.skipped.items()) == list(generic.skipped.items())  # the same counts, in the same order
    assert typed.items == generic.items


def test_typed_decode_equals_the_generic_path_on_every_event_file():
    from pullstudy.data import catalog
    from pullstudy.parsers import kubelet_events as K
    from pullstudy.paths import raw_dir

    files = [raw_dir() / r.source / f.path for r in catalog.load() for f in r.files_of("events")]
    files = [p for p in files if p.is_file()]
    if not files:
        pytest.skip("no event files in data/raw: run `make data`")
    for path in files:
        _assert_same(*_both_ways(path))
    _assert_same(*_both_ways(files))  # together: duplicates across files, joins across files
    # and the typed decode is what reads them, not the generic fallback
    lines = [line for p in files for line in p.read_bytes().split(b"\n") if line.strip()]
    refused = 0
    for line in lines:
        try:
            K._decode_line(line)
        except K._TYPED_REFUSED:
            refused += 1
    assert refused < len(lines) / 100, f"{refused} of {len(lines)} lines refused by the typed decode"


def _typed_accepts(line: str | bytes) -> bool:
    from pullstudy.parsers import kubelet_events as K

    try:
        K._decode_line(line.encode() if isinstance(line, str) else line)
    except K._TYPED_REFUSED:
        return False
    return True


def test_typed_decode_equals_the_generic_path_on_the_bad_input_corpus(tmp_path, corpus):
    path = tmp_path / "events.json"
    path.write_text(corpus[0])
    _assert_same(*_both_ways(path))


def _odd_lines(run1_4_lines) -> list[bytes]:
    """Real events changed in every way the typed decode could read differently from a dict."""
    ev = _pod_events(run1_4_lines)
    good, pulling = ev["Pulled"], ev["Pulling"]
    n = iter(range(10**6))

    def variant(base=good, **fields):
        return {**base, "metadata": dict(base["metadata"], uid=f"uid-odd-{next(n)}"), **fields}

    inv = good["involvedObject"]
    objects = [
        variant(message=5), variant(message=None), variant(message=""), variant(metadata=["a", "list"]),
        dict(good, metadata="str"), dict(good, metadata={}), dict(good, metadata=None),
        dict(good, metadata=dict(good["metadata"], uid="")), dict(good, metadata=dict(good["metadata"], uid=7)),
        variant(reason=5), variant(reason=""), variant(reason=None), variant(reason=["Pulled"]),
        {k: v for k, v in variant().items() if k != "reason"},
        {"level": "info", "message": "no reason", "involvedObject": None},
        {"level": 5, "message": "x"}, {"message": "no level"}, {"level": "info", "regarding": {}},
        {"level": "info", "reason": "", "message": "x"}, {"level": "info", "reason": None, "message": "x"},
        variant(eventTime=1731219229), variant(eventTime=""), variant(eventTime=None, firstTimestamp=""),
        variant(eventTime=None, firstTimestamp=None, metadata=dict(good["metadata"], uid="uid-ct",
                                                                    creationTimestamp="")),
        variant(eventTime=None, firstTimestamp=None, deprecatedFirstTimestamp="2024-11-10T06:10:42Z"),
        variant(pulling, eventTime=None, firstTimestamp=None),
        dict(pulling, eventTime=None, firstTimestamp=None, metadata={"uid": "uid-pulling-timeless"}),
        dict(pulling, eventTime=None, firstTimestamp=None, metadata={"uid": "uid-pulling-ct", "creationTimestamp": ""}),
        dict(pulling, eventTime="", firstTimestamp=None, metadata={"uid": "uid-pulling-empty"}),
        variant(involvedObject={}), variant(involvedObject=None), variant(involvedObject="a string"),
        variant(involvedObject={}, regarding=inv), variant(involvedObject={"kind": "Pod"}, regarding=inv),
        # a pod known by name only: its Pulling joins its Pulled by "/name"
        variant(pulling, involvedObject={k: v for k, v in inv.items() if k not in ("uid", "namespace")}),
        variant(involvedObject={k: v for k, v in inv.items() if k not in ("uid", "namespace")}),
        variant(involvedObject=dict(inv, namespace=None)), variant(involvedObject=dict(inv, uid="")),
        variant(involvedObject=dict(inv, fieldPath=None)), variant(involvedObject=dict(inv, labels={"a": 1})),
        variant(involvedObject=dict(inv, labels={"a": 1e300})), variant(involvedObject=dict(inv, extra=[1])),
        variant(source={}), variant(source={}, deprecatedSource={"host": "old-node"}), variant(source={"host": ""}),
        variant(source={"host": None}), variant(source=None, reportingInstance=""), variant(source="node"),
        variant(reportingInstance=5), variant(count=1.5), variant(count=2**70), variant(count=None),
        variant(note="a note"), {k: v for k, v in variant(note="Successfully pulled image \"x\"").items()
                                 if k != "message"},
        variant(series={"count": 2}), variant(deleted=True),
    ]
    lines = [json.dumps(o).encode() for o in objects]  # with blanks after ":" and ","
    lines += [json.dumps(o, separators=(",", ":")).encode() for o in objects]  # compact, as the exporter writes
    base = json.dumps(variant(), separators=(",", ":")).encode()
    assert base.endswith(b"}") and b'"labels":{' in base
    refused = [  # what orjson refuses: the generic path counts it not-json, and so must the parse
        base[:-1] + b',"other":1e400}',  # beyond a double's range, in a field the parser does not read
        base[:-1] + b',"other":' + b"9" * 400 + b"}",
        base.replace(b'"labels":{', b'"labels":{"big":1e400,', 1),
        base.replace(b'"labels":{', b'"labels":{"x":"\xff\xfe",', 1),  # not UTF-8
        base.replace(b'"labels":{', b'"labels":{"x":"\\ud800",', 1),  # a lone surrogate
        base[:-1] + b',"deep":' + b"[" * 2000 + b"]" * 2000 + b"}",
    ]
    lines += refused + [
        base[:-1] + b',"deep":' + b"[" * 1000 + b"]" * 1000 + b"}",
        base.replace(b'"reason":', b'"reason":"Pulling","reason":', 1),  # a repeated key: the last one counts
        base.replace(b'"reason":', b'"re\\u0061son":', 1),  # an escaped key
        base + b"\r", b"  " + base + b"  ", base + b" x",
        b'{"level":"info","time":"2024-11-10T06:10:30Z","message":"Reading config"}',
        b"[1, 2]", b'"a string"', b"null", b"5", b"{}", b"{",
    ]
    return lines, refused


def test_typed_decode_equals_the_generic_path_on_odd_fields(tmp_path, run1_4_lines):
    """A field of another type, another Event schema, what orjson refuses: the typed decode refuses it too
    (so the line goes the generic way) or reads it the same."""
    lines, refused = _odd_lines(run1_4_lines)
    _, pod_lines = _study_set(run1_4_lines)
    path = tmp_path / "events.json"
    path.write_bytes(b"\n".join([line.encode() for line in pod_lines] + lines) + b"\n")
    typed, generic = _both_ways(path)
    _assert_same(typed, generic)
    assert {"not-json", "not-an-object", "bad-metadata", "missing-reason", "exporter-log", "missing-message",
            "bad-time", "missing-time"} <= set(generic.skipped)
    import orjson
    for line in refused:  # what orjson refuses, the typed decode must refuse too (not read it as an event)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(line)
        assert not _typed_accepts(line)
    # each line alone after a real one
    for i, line in enumerate(lines):
        one = tmp_path / f"one-{i}.json"
        one.write_bytes(pod_lines[0].encode() + b"\n" + line + b"\n")
        _assert_same(*_both_ways(one))
