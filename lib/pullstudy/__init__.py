"""pullstudy: reproducible studies of container image pull time.

The library holds the logic; notebooks in ``notebooks/`` are narrative plus calls into it. It is
grouped by flow, one package a stage, and imports go one way (``tests/test_layout.py``):
``paths``/``stats`` -> ``data`` (fetch, verify, catalog) -> ``records`` + ``parsers`` -> ``images``
(OCI client, manifests, crafter) -> ``sources`` (archive, local) -> ``studies`` (claims, rules, every
study and its charts) -> ``report`` (StudyOutput, parameters, runner, results page).
"""

__version__ = "0.1.0"
