"""Per-kernel startup costs removed at their source (issue 16): no rfc3987_syntax grammar on the altair path."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_altair_path_does_not_build_the_rfc3987_grammar() -> None:
    # The notebooks' import cell: pullstudy first, then the chart module (altair -> jsonschema).
    out = _run("import sys, pullstudy.studies.charts, jsonschema\n"
               "m = sys.modules.get('rfc3987_syntax')\n"
               "print('lark' in sys.modules, getattr(m, '__pullstudy_lazy__', False) if m else 'absent')")
    assert out in ("False True", "False absent"), out


def test_iri_format_still_validated_the_same() -> None:
    pytest.importorskip("rfc3987_syntax")
    code = ("import pullstudy, jsonschema\n"
            "c = jsonschema.Draft7Validator.FORMAT_CHECKER\n"
            "print(c.conforms('http://example.org/ü', 'iri'), c.conforms('not an iri', 'iri'),"
            " c.conforms('a b', 'iri-reference'))")
    # The same answers as jsonschema with the real module imported eagerly.
    eager = _run(code.replace("import pullstudy, jsonschema", "import rfc3987_syntax, jsonschema"))
    assert _run(code) == eager == "True False False"
