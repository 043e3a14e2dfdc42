"""pullstudy: reproducible studies of container image pull time.

The library holds the logic; notebooks in ``notebooks/`` are narrative plus calls into it. It is
grouped by flow, one package a stage, and imports go one way (``tests/test_layout.py``):
``paths``/``stats`` -> ``data`` (fetch, verify, catalog) -> ``records`` + ``parsers`` -> ``images``
(OCI client, manifests, crafter) -> ``sources`` (archive, local) -> ``studies`` (claims, rules, every
study and its charts) -> ``report`` (StudyOutput, parameters, runner, results page).
"""

__version__ = "0.1.0"


def _defer_rfc3987_syntax() -> None:
    """Make ``rfc3987_syntax`` load on first use instead of on ``import jsonschema``.

    Why: importing altair imports jsonschema, whose format checkers (``jsonschema._format``) import
    ``rfc3987_syntax`` when it is installed (it is, via ``jsonschema[format-nongpl]``, which
    jupyter-events requires). That import builds a Lark grammar: ~0.7 s in every notebook kernel, for
    an "iri" format check that altair's Vega-Lite schemas never use. Uninstalling it would not survive a
    fresh environment (pip brings it back), so instead this stand-in module gives jsonschema the one
    function it imports, ``is_valid_syntax``, which imports the real module on its first call: validation
    is unchanged, only its cost moves to the first IRI actually checked (tests/test_startup.py).
    Does nothing once jsonschema or rfc3987_syntax is imported, or when rfc3987_syntax is absent.
    """
    import importlib.util
    import sys
    import types

    name = "rfc3987_syntax"
    if name in sys.modules or "jsonschema" in sys.modules or importlib.util.find_spec(name) is None:
        return
    stub = types.ModuleType(name, "pullstudy's lazy stand-in for rfc3987_syntax (see pullstudy/__init__.py)")
    real: list = []

    def is_valid_syntax(term: str, value: str) -> bool:
        if not real:
            if sys.modules.get(name) is stub:
                del sys.modules[name]
            real.append(importlib.import_module(name))
        return real[0].is_valid_syntax(term, value)

    stub.is_valid_syntax = is_valid_syntax
    stub.__pullstudy_lazy__ = True
    sys.modules[name] = stub


_defer_rfc3987_syntax()
