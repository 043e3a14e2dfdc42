"""results/paper/ (pullstudy.report.paper): every macro of numbers.tex equals its metric, chart PDFs, references.bib,
and `make reproduce` (pullstudy.report.runner) writes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import altair as alt
import pandas as pd
import pytest

from pullstudy.report import paper
from pullstudy.studies.claims import Verdict
from pullstudy.data.fetch import FETCH_REPORT
from pullstudy.paths import PROJECT_ROOT
from pullstudy.report.output import StudyOutput, load_metrics
from notebook_support import run_quietly, write_notebook

MACRO = re.compile(r"^\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}$")


def _study(results: Path) -> None:
    """A results folder written by the real writer: one chart, scalar and nested metrics, two verdicts."""
    out = StudyOutput("03-local-ssd", results / "03-local-ssd")
    chart = alt.Chart(pd.DataFrame({"image": ["a", "b"], "speedup": [1.1, 1.2]}), title="Speedup per image") \
        .mark_bar().encode(x=alt.X("image:N", title="image"), y=alt.Y("speedup:Q", title="speedup (x)"))
    out.chart(chart, "speedup")
    out.metric("overall_speedup", {"ratio": 1.112896510055583, "ci_low": 1.093484213416417, "images": 6,
                                   "clusters": {"baseline": 3, "treatment": 3}})
    out.metric("largest_image_saved_s", 20.631)
    out.metric("tiny_effect", 2.2051925093524716e-05)
    out.metric("cluster_sizes[pulling/run1]", {"4": {"pulls": 24}})
    out.verdict(Verdict("ssd-speedup", "partly supported", "inside the noise floor", value=1.112896510055583,
                        ci_low=1.093484213416417, ci_high=1.20042212758117, unit="x", n=336, clusters="3+3",
                        noise_floor=1.186598090121374))
    out.verdict(Verdict("similarity-sets", "supported", "exact", value=2.2051925093524716e-05,
                        unit="largest |mean - published| in % & _", n=27))
    out.write()


def _resolve(docs: dict, source: str):
    """The metric a macro says it comes from, looked up in metrics.json itself (not in numbers.json)."""
    m = re.fullmatch(r"(\S+) verdict (\S+): (\w+)", source)
    if m:
        return next(v for v in docs[m.group(1)]["verdicts"] if v["claim_id"] == m.group(2))[m.group(3)]
    m = re.fullmatch(r"(\S+) metric (.+)", source)
    value = docs[m.group(1)]["metrics"]
    for key in m.group(2).split("."):
        value = value[key]
    return value


@pytest.fixture
def built(tmp_path):
    results = tmp_path / "results"
    _study(results)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / FETCH_REPORT).write_text(json.dumps({"status": {}, "detail": {}, "source": {
        "doi": "10.5281/zenodo.424242", "record": "424242", "bundle": "pullstudy-data-0.1.0.tar.gz", "sha256": "ab" * 32}}))
    return paper.build(results, raw=raw), results


def test_every_macro_equals_its_metric(built):
    out, results = built
    docs = {d["notebook"]: d for d in load_metrics(results)}
    numbers = json.loads((out / "numbers.json").read_text())["macros"]
    tex = {}
    for line in (out / "numbers.tex").read_text().splitlines():
        if line.startswith("\\newcommand"):
            name, body = MACRO.fullmatch(line).groups()
            assert name not in tex, f"\\{name} defined twice"
            tex[name] = body
    assert set(tex) == set(numbers)
    checked = 0
    for name, entry in numbers.items():
        assert tex[name] == entry["tex"]
        if " verdict " not in entry["source"] and " metric " not in entry["source"]:
            continue
        metric = _resolve(docs, entry["source"])
        if isinstance(metric, (int, float)):
            assert "e" not in tex[name].lower(), f"\\{name} printed with an exponent"
            assert abs(float(tex[name]) - metric) <= 0.5 * 10 ** -entry["decimals"] + 1e-12, name
        else:
            assert tex[name] == paper.tex_escape(metric)
        checked += 1
    assert checked >= 15
    assert tex["psSsdSpeedup"] == "1.11" and tex["psSsdSpeedupCiLow"] == "1.09" and tex["psSsdSpeedupCiHigh"] == "1.20"
    assert tex["psSsdSpeedupN"] == "336" and tex["psSsdSpeedupVerdict"] == "partly supported"
    assert tex["psLocalSsdOverallSpeedupClustersBaseline"] == "3"
    assert tex["psSimilaritySets"] == "0.0000221"
    assert tex["psSimilaritySetsUnit"] == r"largest |mean - published| in \% \& \_"
    assert tex["psDataDoi"] == "10.5281/zenodo.424242"


def test_per_run_details_are_counted_as_skipped_not_dropped(built):
    out, _ = built
    skipped = json.loads((out / "numbers.json").read_text())["skipped"]
    assert skipped == ["03-local-ssd metric cluster_sizes[pulling/run1].4.pulls: not a plain name (a per-run detail)"]


def test_charts_are_also_pdf(built):
    out, _ = built
    pdf = out / "figures" / "03-local-ssd-speedup.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-") and pdf.stat().st_size > 1000
    assert json.loads((out / "numbers.json").read_text())["figures"] == ["figures/03-local-ssd-speedup.pdf"]


def test_a_pdf_is_converted_again_only_when_its_svg_changed(built):
    """Issue 16: make reproduce converts a notebook's PDFs as soon as it has run; the final build keeps a PDF
    whose SVG is unchanged since, and converts one whose SVG changed (same name, new content)."""
    out, results = built
    pdf = out / "figures" / "03-local-ssd-speedup.pdf"
    first = pdf.read_bytes()
    pdf.write_bytes(first + b"% kept\n")  # a mark that survives only if the PDF is not converted again
    paper.figures(results, out / "figures")
    assert pdf.read_bytes().endswith(b"% kept\n")
    assert paper.figures(results, out / "figures", only="03-local-ssd") == [pdf]
    svg = results / "03-local-ssd" / "speedup.svg"
    svg.write_text(svg.read_text().replace("Speedup per image", "Speedup per image, again"))
    paper.figures(results, out / "figures")
    assert not pdf.read_bytes().endswith(b"% kept\n") and pdf.read_bytes().startswith(b"%PDF-")


def test_references_cite_the_software_and_the_data_doi(built):
    out, _ = built
    bib = (out / "references.bib").read_text()
    version = re.search(r"^version: (\S+)", (PROJECT_ROOT / "CITATION.cff").read_text(), re.M).group(1)
    software = re.search(r"@misc\{pullstudy,\n(.*?)\n\}", bib, re.S).group(1)
    assert f"version = {{{version}}}" in software and "pullstudy: reproducible studies" in software
    data = re.search(r"@misc\{pullstudy-data,\n(.*?)\n\}", bib, re.S).group(1)
    assert "doi = {10.5281/zenodo.424242}" in data and "SHA-256 " + "ab" * 32 in data
    assert "doi = {10.5281/zenodo.13738495}" in bib  # the upstream performance-study data
    assert bib.count("{") == bib.count("}")


def test_without_a_fetch_the_reserved_doi_is_cited(tmp_path):
    results = tmp_path / "results"
    _study(results)
    citation = tmp_path / "CITATION.cff"
    citation.write_text((PROJECT_ROOT / "CITATION.cff").read_text())
    from pullstudy.data import zenodo
    readme = tmp_path / "README.md"
    readme.write_text("# data\n")
    zenodo.write_doi("10.5072/zenodo.31337", "0.1.0", readme, citation)
    out = paper.build(results, raw=tmp_path / "no-raw", citation=citation)
    assert "doi = {10.5072/zenodo.31337}" in (out / "references.bib").read_text()
    bare = tmp_path / "CITATION-without-data-doi.cff"
    bare.write_text(re.sub(re.escape(zenodo.CFF_BEGIN) + r".*?" + re.escape(zenodo.CFF_END) + r"\n", "",
                           citation.read_text(), flags=re.S))
    data = re.search(r"@misc\{pullstudy-data,\n(.*?)\n\}", (paper.build(results, raw=tmp_path / "no-raw",
                     citation=bare) / "references.bib").read_text(), re.S).group(1)
    assert "not deposited yet" in data and "doi" not in data


def test_tex_number_never_uses_an_exponent():
    assert paper.tex_number(2.2e-05) == ("0.0000220", 7)
    assert paper.tex_number(122.102) == ("122", 0)
    assert paper.tex_number(1027) == ("1027", 0)
    assert paper.camel("pulling-test/run1") == "PullingTestRunOne"


@pytest.mark.notebooks
def test_reproduce_writes_results_paper(tmp_path):
    """The one call at the end of `make reproduce`: a notebook's metrics become numbers.tex."""
    write_notebook(tmp_path / "notebooks" / "01-ok.ipynb",
                   "from pullstudy.studies.claims import Verdict\nfrom pullstudy.report.output import StudyOutput\n"
                   "out = StudyOutput('01-ok', output_dir)\n"
                   "out.verdict(Verdict('size-growth', 'supported', 'slope > 0', value=6.5, ci_low=5.0, ci_high=8.0, "
                   "unit='s/GB', n=9))\n"
                   "out.write()")
    run_quietly(tmp_path / "notebooks", tmp_path / "results")
    tex = (tmp_path / "results" / "paper" / "numbers.tex").read_text()
    assert "\\newcommand{\\psSizeGrowth}{6.50}" in tex and "\\newcommand{\\psSizeGrowthN}{9}" in tex
    assert (tmp_path / "results" / "paper" / "references.bib").exists()
