"""The library's imports go one way, by stage; no analysis module imports a record source's implementation.

Stages, lowest first (a module may import its own stage or lower ones only):

    foundation  pullstudy, paths, stats
    data        data/        fetch + verify, catalog, raw files
    records     records, parsers/   the record schema and the parsers that produce records
    images      images/      OCI client, OCI manifests, image crafter
    sources     sources/     the source interface, archive/ and local/ (each: source.py, the Source class
                             the analysis may use, and the backend behind it: run files, services, measurement)
    studies     studies/     claims + verdict rules, every study and its charts
    report      report/      StudyOutput, parameters, the runner, the results page

Why a test: the order is what lets a new source (Kubernetes) or a new study be added without touching
the others. Every import counts, also one inside a function: a lazy import hides an upward edge, it
does not remove it. Run as a script (``python tests/test_layout.py [lib/pullstudy]``) it prints the
graph's violations.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

STAGES = [("foundation", ["", "paths", "stats"]), ("data", ["data"]), ("records", ["records", "parsers"]),
          ("images", ["images"]), ("sources", ["sources"]), ("studies", ["studies"]), ("report", ["report"])]
# The analysis stages may use a source only through its face: the interface (``sources``,
# ``sources.interface``) and each
# source's class (``sources.<kind>.source``), never the backend behind it (run files, services, measurement).
ANALYSIS = ("studies", "report")


def is_interface(module: str) -> bool:
    parts = module.split(".")
    return module in ("sources", "sources.interface") or (len(parts) == 3 and parts[0] == "sources"
                                                          and parts[2] == "source")

LIB = Path(__file__).resolve().parent.parent / "lib" / "pullstudy"


def modules(lib: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(lib.rglob("*.py")):
        parts = list(p.relative_to(lib).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(lib: Path) -> dict[str, set[str]]:
    """module -> the pullstudy modules it imports (names relative to pullstudy; '' is the package)."""
    mods = modules(lib)
    graph = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".") if pkg else []
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    mod = ".".join(["pullstudy", *base] + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [(mod, a.name) for a in node.names]
            else:
                continue
            for mod, attr in targets:
                if mod != "pullstudy" and not mod.startswith("pullstudy."):
                    continue
                rel = mod[len("pullstudy."):] if mod != "pullstudy" else ""
                sub = f"{rel}.{attr}" if rel and attr else (attr or rel)
                if attr and sub in mods:
                    deps.add(sub)
                elif rel in mods:
                    deps.add(rel)
                else:
                    deps.add("?" + (sub or rel))
        deps.discard(name)
        graph[name] = deps
    return graph


def stage_of(module: str) -> int:
    top = module.split(".")[0]
    for i, (_, tops) in enumerate(STAGES):
        if top in tops:
            return i
    raise KeyError(module)


def violations(lib: Path) -> list[str]:
    graph = imports(lib)
    bad = []
    for mod, deps in sorted(graph.items()):
        try:
            s = stage_of(mod)
        except KeyError:
            bad.append(f"pullstudy.{mod}: in no stage (add its folder to STAGES or move it)")
            continue
        for dep in sorted(deps):
            if dep.startswith("?"):
                bad.append(f"pullstudy.{mod} imports pullstudy.{dep[1:]}, which does not exist")
                continue
            d = stage_of(dep)
            if d > s:
                bad.append(f"pullstudy.{mod} ({STAGES[s][0]}) imports pullstudy.{dep} ({STAGES[d][0]}): upward")
            if STAGES[s][0] in ANALYSIS and dep.split(".")[0] == "sources" and not is_interface(dep):
                bad.append(f"pullstudy.{mod} ({STAGES[s][0]}) imports the source implementation pullstudy.{dep}")
    bad += [f"import cycle: {' -> '.join('pullstudy.' + m for m in c)}" for c in cycles(graph)]
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a closed path."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_go_one_way_and_no_analysis_module_imports_a_source_implementation():
    bad = violations(LIB)
    assert not bad, "\n".join(bad)


def test_every_stage_folder_exists_and_holds_modules():
    mods = modules(LIB)
    for stage, tops in STAGES[1:]:
        assert any(m.split(".")[0] in tops for m in mods), f"stage {stage}: no module under {tops}"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    lib = tmp_path / "pullstudy"
    for rel, text in {"__init__.py": "", **files}.items():
        p = lib / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return lib


def test_an_upward_edge_is_found_even_inside_a_function(tmp_path):
    lib = _package(tmp_path, {"data/__init__.py": "", "data/fetch.py": "def f():\n    from ..report import page\n",
                              "report/__init__.py": "", "report/page.py": ""})
    assert violations(lib) == ["pullstudy.data.fetch (data) imports pullstudy.report.page (report): upward"]


def test_a_cycle_within_a_stage_is_found(tmp_path):
    lib = _package(tmp_path, {"studies/__init__.py": "", "studies/a.py": "from . import b\n",
                              "studies/b.py": "from pullstudy.studies import a\n"})
    assert violations(lib) == ["import cycle: pullstudy.studies.a -> pullstudy.studies.b -> pullstudy.studies.a"]


def test_a_study_importing_a_backend_is_refused_but_the_source_interface_and_classes_are_not(tmp_path):
    lib = _package(tmp_path, {"sources/__init__.py": "", "sources/local/__init__.py": "",
                              "sources/local/containerd.py": "", "sources/local/source.py": "",
                              "studies/__init__.py": "",
                              "studies/ok.py": "from pullstudy import sources\nfrom pullstudy.sources.local import source\n",
                              "studies/bad.py": "from pullstudy.sources.local import containerd\n"})
    assert violations(lib) == [
        "pullstudy.studies.bad (studies) imports the source implementation pullstudy.sources.local.containerd"]


if __name__ == "__main__":
    lib = Path(sys.argv[1]) if len(sys.argv) > 1 else LIB
    found = violations(lib)
    print("\n".join(found) if found else f"no violations in {lib}")
    sys.exit(1 if found else 0)
