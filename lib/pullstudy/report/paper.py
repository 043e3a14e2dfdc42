"""results/paper/: what a paper includes, generated from the results, never typed.

``make reproduce`` ends by writing (``build``):

* ``figures/<notebook>-<chart>.pdf`` — every chart the notebooks saved (and the results page's own, e.g.
  ``how-sure.pdf``), converted from its SVG by vl-convert: vector figures for ``\\includegraphics``;
* ``numbers.tex`` — one LaTeX macro per number and verdict, e.g. ``\\psSsdSpeedup`` (1.11),
  ``\\psSsdSpeedupCiLow``, ``\\psSsdSpeedupCiHigh``, ``\\psSsdSpeedupN``, ``\\psSsdSpeedupVerdict``, and the
  notebooks' scalar metrics (``\\psLocalSsdOverallSpeedupRatio``);
* ``numbers.json`` — the same macros with the full-precision value, the digits shown and where each came
  from (notebook, verdict or metric), so a test or a reviewer can check every number in the text;
* ``references.bib`` — the software (from CITATION.cff), the data bundle with its DOI (the DOI it was fetched
  by, else the one ``make deposit`` reserved), and the upstream data it derives from.

Numbers are shown to three significant digits (``1.11``, ``64.1``, ``0.853``, ``0.0000221``); integers in
full. Macro names hold letters only (LaTeX's rule): digits are spelled out (``run1`` -> ``RunOne``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import vl_convert
import yaml

from pullstudy import paths
from pullstudy.data.fetch import FETCH_REPORT
from .output import METRICS_FILE, load_metrics, read_metrics

PREFIX = "ps"
PAPER_DIR = "paper"  # under results/
_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
VERDICT_FIELDS = {"value": "", "ci_low": "CiLow", "ci_high": "CiHigh", "within_ci_low": "WithinCiLow",
                  "within_ci_high": "WithinCiHigh", "n": "N", "noise_floor": "NoiseFloor",
                  "clusters": "Clusters", "unit": "Unit", "verdict": "Verdict"}


def camel(text: str) -> str:
    """``03-local-ssd`` -> ``LocalSsd`` (leading digits of a notebook name dropped by the caller),
    ``overall_speedup`` -> ``OverallSpeedup``, ``run1`` -> ``RunOne``: letters only."""
    out = []
    for word in re.split(r"[^A-Za-z0-9]+", text):
        for part in re.findall(r"[A-Za-z]+|[0-9]", word):
            out.append(_DIGITS[int(part)] if part.isdigit() else part[:1].upper() + part[1:])
    return "".join(out)


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


def tex_number(value: float | int) -> tuple[str, int | None]:
    """(text, decimals) of a number as shown: integers in full, else three significant digits, never an
    exponent (LaTeX prints ``1e-05`` as it is)."""
    if isinstance(value, int):
        return str(value), 0
    if value == 0 or not math.isfinite(value):
        return ("0", 0) if value == 0 else (str(value), None)
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}", decimals


def _notebook_name(notebook: str) -> str:
    return camel(re.sub(r"^[0-9]+-", "", notebook))


def _scalars(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Numeric leaves of a metrics dict, by key path; keys that are not plain names (per-run details such as
    ``cluster_sizes[pulling/run1]``) are left to numbers.json's ``skipped``."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += _scalars(v, path + (str(k),))
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(path, value)]
    return []


def collect_numbers(results_root: Path) -> tuple[dict[str, dict], list[str]]:
    """name -> {tex, value, decimals, source} for every verdict field and scalar metric; and what was skipped."""
    macros: dict[str, dict] = {}
    skipped: list[str] = []

    def add(name: str, value: Any, source: str) -> None:
        if name in macros:
            skipped.append(f"{source}: macro \\{name} already holds {macros[name]['source']}")
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            tex, decimals = tex_number(value)
        else:
            tex, decimals = tex_escape(value), None
        macros[name] = {"tex": tex, "value": value, "decimals": decimals, "source": source}

    for doc in load_metrics(results_root):
        nb = doc["notebook"]
        for v in doc["verdicts"]:
            claim = camel(v["claim_id"])
            for field, suffix in VERDICT_FIELDS.items():
                if v.get(field) not in (None, ""):
                    add(f"{PREFIX}{claim}{suffix}", v[field], f"{nb} verdict {v['claim_id']}: {field}")
        for path, value in _scalars(doc["metrics"]):
            if not all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_ -]*", k) for k in path) or len(path) > 3:
                skipped.append(f"{nb} metric {'.'.join(path)}: not a plain name (a per-run detail)")
                continue
            add(f"{PREFIX}{_notebook_name(nb)}{''.join(camel(k) for k in path)}", value,
                f"{nb} metric {'.'.join(path)}")
    return macros, skipped


def data_identity(raw: Path | None = None, citation: Path | None = None) -> dict:
    """The data's DOI and bundle checksum: from the fetch by DOI when data/raw came that way, else the DOI
    ``make deposit`` reserved (CITATION.cff); empty when neither."""
    raw = Path(raw) if raw else paths.raw_dir()
    try:
        source = json.loads((raw / FETCH_REPORT).read_text()).get("source") or {}
    except (OSError, ValueError):
        source = {}
    if source.get("doi"):
        return {"doi": source["doi"], "bundle": source.get("bundle"), "sha256": source.get("sha256"),
                "how": "fetched by DOI (make data DOI=...)"}
    for ref in _citation(citation).get("references") or []:
        if str(ref.get("title", "")).startswith("pullstudy data bundle") and ref.get("doi"):
            return {"doi": str(ref["doi"]), "bundle": None, "sha256": None, "how": "reserved by make deposit"}
    return {}


def _citation(path: Path | None = None) -> dict:
    return yaml.safe_load(Path(path or paths.PROJECT_ROOT / "CITATION.cff").read_text())


def _bib_value(text: str) -> str:
    return str(text).replace("{", "").replace("}", "")


def references_bib(data: dict, citation: Path | None = None) -> str:
    """BibTeX (@misc, so any style takes it) for the software, the data bundle, and what it derives from."""
    cff = _citation(citation)
    authors = " and ".join("{" + _bib_value(a.get("name") or f"{a['family-names']}, {a['given-names']}") + "}"
                           for a in cff["authors"])
    entries = [("pullstudy", {"author": authors, "title": "{" + _bib_value(cff["title"]) + "}",
                              "version": cff["version"], "note": f"Software, {cff['license']} licence",
                              **({"doi": cff["doi"]} if cff.get("doi") else {})})]
    data_fields = {"author": authors, "title": f"{{pullstudy data bundle {cff['version']}}}",
                   "version": cff["version"]}
    if data.get("doi"):
        data_fields |= {"doi": data["doi"], "url": f"https://doi.org/{data['doi']}"}
        if data.get("sha256"):
            data_fields["note"] = f"Dataset, {data['bundle']}, SHA-256 {data['sha256']}"
        else:
            data_fields["note"] = "Dataset"
    else:
        data_fields["note"] = "Dataset; not deposited yet (make archive, make deposit)"
    entries.append(("pullstudy-data", data_fields))
    for i, ref in enumerate(cff.get("references") or []):
        if str(ref.get("title", "")).startswith("pullstudy data bundle"):
            continue
        key = re.sub(r"[^a-z0-9]+", "-", str(ref.get("repository") or ref["title"]).split("/")[-1].lower()).strip("-")
        fields = {"author": " and ".join("{" + _bib_value(a["name"]) + "}" for a in ref.get("authors", [])),
                  "title": "{" + _bib_value(ref["title"]) + "}", "note": f"Dataset, {ref.get('license', '')} licence"}
        if ref.get("doi"):
            fields["doi"] = str(ref["doi"])
        if ref.get("repository"):
            fields["url"] = ref["repository"]
        entries.append((key or f"ref{i}", fields))
    out = ["% Generated by make reproduce (pullstudy.report.paper) from CITATION.cff and the data's DOI; do not edit.\n"]
    for key, fields in entries:
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
        out.append(f"@misc{{{key},\n{body}\n}}\n")
    return "\n".join(out)


def figures(results_root: Path, out: Path, only: str | None = None) -> list[Path]:
    """Every saved chart's SVG as a PDF: ``<notebook>-<chart>.pdf``, and the page's own charts by name.

    ``only``: the charts of that notebook alone, converted as soon as it has run (``make reproduce``
    does this while other notebooks still run). A PDF whose SVG is unchanged since it was converted is
    kept (its key, a SHA-256 of the SVG, the PDF's path and vl-convert's version, in ``<results>/.reproduce-cache/pdf/``):
    the PDF is a pure function of them, so converting again gives the same figure (issue 16).
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    sources = [] if only else [(p, p.stem) for p in sorted(results_root.glob("*.svg"))]
    docs = [read_metrics(results_root / only / METRICS_FILE)] if only else load_metrics(results_root)
    for doc in docs:  # only: that notebook's metrics alone (others may be being written)
        for chart in doc.get("charts") or []:
            sources.append((results_root / doc["notebook"] / f"{chart}.svg", f"{doc['notebook']}-{chart}"))
    stamps = results_root / ".reproduce-cache" / "pdf"
    for svg, name in sources:
        if not svg.is_file():
            continue  # listed but not written (the notebook stopped): the results page says so
        target = out / f"{name}.pdf"
        text = svg.read_text()
        key = hashlib.sha256(f"{vl_convert.__version__}\n{target.resolve()}\n{text}".encode()).hexdigest()
        stamp = stamps / f"{name}.key"
        try:
            fresh = target.is_file() and stamp.read_text(encoding="utf-8") == key
        except OSError:
            fresh = False
        if not fresh:
            target.write_bytes(vl_convert.svg_to_pdf(text))
            with contextlib.suppress(OSError):  # no stamp only means converting again next time
                stamps.mkdir(parents=True, exist_ok=True)
                stamp.write_text(key, encoding="utf-8")
        written.append(target)
    return written


def build(results_root: str | Path | None = None, *, raw: Path | None = None, citation: Path | None = None) -> Path:
    """Write results/paper/ (see the module docstring); return the folder."""
    results_root = Path(results_root) if results_root else paths.results_dir()
    out = results_root / PAPER_DIR
    out.mkdir(parents=True, exist_ok=True)
    macros, skipped = collect_numbers(results_root)
    data = data_identity(raw, citation)
    cff = _citation(citation)
    macros.setdefault(f"{PREFIX}SoftwareVersion", {"tex": tex_escape(cff["version"]), "value": str(cff["version"]),
                                                    "decimals": None, "source": "CITATION.cff version"})
    if data.get("doi"):
        macros.setdefault(f"{PREFIX}DataDoi", {"tex": tex_escape(data["doi"]), "value": data["doi"],
                                               "decimals": None, "source": f"data DOI, {data['how']}"})
    pdfs = figures(results_root, out / "figures")
    lines = ["% Generated by make reproduce (pullstudy.report.paper) from results/*/metrics.json; do not edit.",
             "% \\input{results/paper/numbers.tex}, then write e.g. \\psSsdSpeedup{}x [\\psSsdSpeedupCiLow, "
             "\\psSsdSpeedupCiHigh] (n = \\psSsdSpeedupN)."]
    for name in sorted(macros):
        lines.append(f"% {macros[name]['source']}")
        lines.append(f"\\newcommand{{\\{name}}}{{{macros[name]['tex']}}}")
    (out / "numbers.tex").write_text("\n".join(lines) + "\n")
    (out / "numbers.json").write_text(json.dumps(
        {"about": "Every macro of numbers.tex: tex is what the paper prints, value the full-precision figure, "
                  "decimals the digits shown, source where it comes from.",
         "data": data, "macros": macros, "skipped": skipped,
         "figures": [p.relative_to(out).as_posix() for p in pdfs]}, indent=1, sort_keys=True))
    (out / "references.bib").write_text(references_bib(data, citation))
    return out
