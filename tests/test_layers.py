"""The package's layers only point down, and nothing imports in a circle.

Every import of every module under ``src/m3rcr`` counts: at module level, inside functions, under
``if TYPE_CHECKING``, and ``importlib.import_module("m3rcr....")`` / ``__import__`` with a literal name, so
that no lazy import can hide an upward dependency or a cycle. The tiers, lowest first:

0. ``m3rcr.errors``, ``m3rcr.version``, ``m3rcr.utils``
1. ``m3rcr.data``
2. ``m3rcr.models``
3. ``m3rcr.training``, ``m3rcr.inference``, ``m3rcr.evaluation`` (peers: their package graph must stay acyclic,
   and inference imports neither of the other two)
4. ``m3rcr.reports``: renders results (tables, figures, HTML)
5. ``m3rcr.workflows``, ``m3rcr.benchmark``: run an evaluation and render it into an output folder
6. ``m3rcr.cli``, ``m3rcr.__main__``
7. ``m3rcr`` (the package's ``__init__``): the facade (``m3rcr.load_model``, ``m3rcr.predict_scene``) over all of
   them; nothing imports it (Python runs it first anyway, and its exports load only when used)

An import whose target the test cannot read (``import_module`` of a computed name) is itself a breach.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "m3rcr"

#: (package, tier): a module belongs to the longest package that prefixes its name
TIERS: dict[str, int] = {
    "m3rcr.errors": 0, "m3rcr.version": 0, "m3rcr.utils": 0,
    "m3rcr.data": 1,
    "m3rcr.models": 2,
    "m3rcr.training": 3, "m3rcr.inference": 3, "m3rcr.evaluation": 3,
    "m3rcr.reports": 4,
    "m3rcr.workflows": 5, "m3rcr.benchmark": 5,
    "m3rcr.cli": 6, "m3rcr.__main__": 6,
    "m3rcr": 7,
}
#: what stands for an import whose target is computed at run time (the collector cannot follow it)
UNREADABLE = "<computed>"
#: packages that import none of their tier-3 peers (inference must not pull in evaluation's or training's deps)
NO_PEERS = ("m3rcr.inference",)


class Import(NamedTuple):
    """One import statement's target, where it was written."""

    file: str
    line: int
    target: str  # an m3rcr module (or package) name


def package_of(module: str) -> str | None:
    """The layer package of ``module`` (the longest key of :data:`TIERS` prefixing it); None if it has none."""
    best = None
    for pkg in TIERS:  # the root package stands for its ``__init__`` only
        if (module == pkg or (pkg != ROOT and module.startswith(pkg + "."))) and (best is None or len(pkg) > len(best)):
            best = pkg
    return best


def module_name(path: Path, src: Path = SRC) -> str:
    """``src/m3rcr/evaluation/metrics.py`` -> ``m3rcr.evaluation.metrics``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


_LOADERS = ("import_module", "__import__")
#: calls through which a module can run or reach code the collector cannot follow
_OPAQUE_CALLS = ("spec_from_file_location", "module_from_spec")
_OPAQUE_BUILTINS = ("exec", "eval")  # called by bare name (``model.eval()`` is torch's, not the builtin)


def _name_of(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _dynamic_target(node: ast.Call) -> str | None:
    """The module an ``import_module`` / ``__import__`` call loads (relative names resolved against a literal
    ``package``); :data:`UNREADABLE` under the root when it is not a literal."""
    name = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
    package = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "package"),
                                                             None)
    if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
        return f"{ROOT}.{UNREADABLE}"
    if not name.value.startswith("."):
        return name.value
    if isinstance(package, ast.Constant) and isinstance(package.value, str):
        return importlib.util.resolve_name(name.value, package.value)
    return f"{ROOT}.{UNREADABLE}"


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names taken from it) for every import in ``tree``, wherever it is written; a loader used
    other than by a plain call (aliased, passed around), ``exec``/``eval``, ``sys.modules[...]`` and loading
    from a file count as imports of :data:`UNREADABLE`."""
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if (node.module or "").split(".")[0] == "importlib" and set(names) & set(_LOADERS):
                yield node.lineno, f"{ROOT}.{UNREADABLE}", []  # the loader under a bare name: followed below
            yield node.lineno, _resolve(module, is_package, node), names
        elif isinstance(node, ast.Call) and _name_of(node.func) in _LOADERS:
            called.add(id(node.func))
            yield node.lineno, _dynamic_target(node) or "", []
        elif isinstance(node, ast.Call) and (_name_of(node.func) in _OPAQUE_CALLS or (
                isinstance(node.func, ast.Name) and node.func.id in _OPAQUE_BUILTINS)):
            yield node.lineno, f"{ROOT}.{UNREADABLE}", []
        elif isinstance(node, ast.Attribute) and node.attr == "modules" and _name_of(node.value) == "sys":
            yield node.lineno, f"{ROOT}.{UNREADABLE}", []
    for node in ast.walk(tree):  # a loader referred to without being called: an alias hides what it loads
        if isinstance(node, ast.Attribute | ast.Name) and _name_of(node) in _LOADERS and id(node) not in called \
                and isinstance(getattr(node, "ctx", None), ast.Load):
            yield node.lineno, f"{ROOT}.{UNREADABLE}", []


def collect_imports(src: Path = SRC) -> dict[str, list[Import]]:
    """Every module under ``src/m3rcr`` -> its imports of m3rcr modules, in line order (``from pkg import
    submodule`` counts as an import of the submodule; ``from pkg import name`` as one of the package)."""
    files = sorted((src / ROOT).rglob("*.py"))
    modules = {module_name(p, src): p for p in files}
    graph: dict[str, list[Import]] = {}
    for name, path in modules.items():
        rel = str(path.relative_to(src.parent))
        tree = ast.parse(path.read_text(), filename=str(path))
        found: list[Import] = []
        for line, target, names in _imported_names(tree, name, path.name == "__init__.py"):
            if target != ROOT and not target.startswith(ROOT + "."):
                continue
            # ``from pkg import submodule`` depends on the submodule (the package is imported first in any case)
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if not names or len(subs) < len(names):
                found.append(Import(rel, line, target))
            found += [Import(rel, line, s) for s in subs]
        graph[name] = sorted(found, key=lambda i: i.line)
    return graph


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (or a self-loop): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graphs here are a few hundred nodes deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def check_layers(graph: Mapping[str, Sequence[Import]]) -> list[str]:
    """Every breach of the layering in ``graph`` (module -> its imports of m3rcr modules), as messages that
    name the file, line and import; empty when the layering holds."""
    problems: list[str] = []
    module_edges: dict[str, set[str]] = {m: set() for m in graph}
    package_edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Import] = {}
    for module, imports in graph.items():
        source = package_of(module)
        if source is None:
            problems.append(f"{module}: no tier assigned; add its package to TIERS in tests/test_layers.py")
            continue
        for imp in imports:
            if imp.target.endswith(UNREADABLE):
                problems.append(f"{imp.file}:{imp.line}: imports a module the test cannot follow (a computed name, an "
                                "aliased loader, exec/eval or sys.modules); write the import out so its layer is checked")
                continue
            target = package_of(imp.target)
            if target is None:
                problems.append(f"{imp.file}:{imp.line}: imports {imp.target}, which has no tier")
                continue
            if TIERS[target] > TIERS[source]:
                problems.append(f"{imp.file}:{imp.line}: imports {imp.target} (tier {TIERS[target]}, {target}) "
                                f"from tier {TIERS[source]} ({source}): imports may only point down")
            if target != source and TIERS[target] == TIERS[source] and source in NO_PEERS:
                problems.append(f"{imp.file}:{imp.line}: imports {imp.target}: {source} imports none of its "
                                "tier peers")
            if imp.target in graph and imp.target != module:
                module_edges[module].add(imp.target)
                where.setdefault((module, imp.target), imp)
            if target != source:
                package_edges.setdefault(source, set()).add(target)
                where.setdefault((source, target), imp)
    for kind, edges in (("module", module_edges), ("package", package_edges)):
        for component in _cycles(edges):
            members = set(component)
            links = [where[(a, b)] for a in component for b in sorted(edges.get(a, ())) if b in members]
            detail = "; ".join(f"{i.file}:{i.line} imports {i.target}" for i in links)
            problems.append(f"{kind} import cycle among {', '.join(component)}: {detail}")
    return problems


# ---------------------------------------------------------------------------------------------- the package


def test_every_module_is_parsed() -> None:
    graph = collect_imports()
    assert "m3rcr" in graph and "m3rcr.data" in graph and "m3rcr.evaluation.metrics" in graph


def test_layers_only_point_down_and_nothing_imports_in_a_circle() -> None:
    problems = check_layers(collect_imports())
    assert not problems, "layering broken:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------- the checker


def _fake(**modules: Sequence[str]) -> dict[str, list[Import]]:
    """A graph from ``module=[targets]`` (dots written as ``__``)."""
    graph = {}
    for key, targets in modules.items():
        name = key.replace("__", ".")
        graph[name] = [Import(name.replace(".", "/") + ".py", i + 1, t) for i, t in enumerate(targets)]
    return graph


def test_checker_accepts_downward_imports() -> None:
    graph = _fake(m3rcr__reports__tables=["m3rcr.evaluation.aggregate", "m3rcr.data.preprocess"],
                  m3rcr__evaluation__aggregate=["m3rcr.utils.files"], m3rcr__data__preprocess=[],
                  m3rcr__utils__files=["m3rcr.errors"], m3rcr__errors=[])
    assert check_layers(graph) == []


def test_checker_names_an_upward_import() -> None:
    graph = _fake(m3rcr__evaluation__evaluate=["m3rcr.reports.figures"], m3rcr__reports__figures=[])
    (problem,) = check_layers(graph)
    assert problem.startswith("m3rcr/evaluation/evaluate.py:1: imports m3rcr.reports.figures (tier 4")


def test_checker_finds_a_module_cycle_within_a_package() -> None:
    graph = _fake(m3rcr__evaluation__a=["m3rcr.evaluation.b"], m3rcr__evaluation__b=["m3rcr.evaluation.c"],
                  m3rcr__evaluation__c=["m3rcr.evaluation.a"])
    (problem,) = check_layers(graph)
    assert problem.startswith("module import cycle among m3rcr.evaluation.a, m3rcr.evaluation.b, m3rcr.evaluation.c")
    assert "m3rcr/evaluation/c.py:1 imports m3rcr.evaluation.a" in problem


def test_checker_finds_a_cycle_between_peer_packages() -> None:
    graph = _fake(m3rcr__training__module=["m3rcr.evaluation.metrics"], m3rcr__evaluation__metrics=[],
                  m3rcr__evaluation__report=["m3rcr.training.run"], m3rcr__training__run=[])
    (problem,) = check_layers(graph)
    assert problem.startswith("package import cycle among m3rcr.evaluation, m3rcr.training")


def test_checker_keeps_inference_free_of_its_peers() -> None:
    graph = _fake(m3rcr__inference__predict=["m3rcr.evaluation.predictors"], m3rcr__evaluation__predictors=[])
    (problem,) = check_layers(graph)
    assert "m3rcr/inference/predict.py:1: imports m3rcr.evaluation.predictors" in problem


def test_checker_refuses_a_module_without_a_tier() -> None:
    assert check_layers(_fake(m3rcr__plugins__x=[])) == [
        "m3rcr.plugins.x: no tier assigned; add its package to TIERS in tests/test_layers.py"]


def test_collector_sees_lazy_relative_and_dynamic_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "m3rcr"
    (pkg / "evaluation").mkdir(parents=True)
    (pkg / "reports").mkdir()
    for init in (pkg / "__init__.py", pkg / "evaluation" / "__init__.py", pkg / "reports" / "__init__.py"):
        init.write_text("")
    (pkg / "reports" / "figures.py").write_text("")
    (pkg / "evaluation" / "evaluate.py").write_text(
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from m3rcr.utils import files\n"
        "def f():\n    from ..reports import figures\n"
        "def g():\n    return importlib.import_module('m3rcr.benchmark')\n")
    graph = collect_imports(tmp_path)
    targets = [(i.line, i.target) for i in graph["m3rcr.evaluation.evaluate"]]
    assert targets == [(4, "m3rcr.utils"), (6, "m3rcr.reports.figures"), (8, "m3rcr.benchmark")]
    problems = check_layers(graph)
    assert any("evaluate.py:6: imports m3rcr.reports.figures" in p for p in problems)
    assert any("evaluate.py:8: imports m3rcr.benchmark" in p for p in problems)


@pytest.mark.parametrize("code", [
    "import importlib\ndef f():\n    return importlib.import_module(name='m3rcr.reports')\n",
    "import importlib\ndef f():\n    return importlib.import_module('.reports', 'm3rcr')\n",
])
def test_keyword_and_relative_dynamic_imports_are_followed(tmp_path: Path, code: str) -> None:
    pkg = tmp_path / "m3rcr" / "data"
    pkg.mkdir(parents=True)
    for folder in (tmp_path / "m3rcr", pkg, tmp_path / "m3rcr" / "reports"):
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text("")
    (pkg / "x.py").write_text(code)
    (problem,) = check_layers(collect_imports(tmp_path))
    assert problem.endswith("m3rcr/data/x.py:3: imports m3rcr.reports (tier 4, m3rcr.reports) from tier 1 "
                            "(m3rcr.data): imports may only point down"), problem


@pytest.mark.parametrize("code", [
    "import importlib\nload = importlib.import_module\n",
    "from importlib import import_module as load\n",
    "exec('import m3rcr.reports')\n",
    "import sys\nx = sys.modules['m3rcr.reports']\n",
])
def test_imports_the_collector_cannot_follow_are_refused(tmp_path: Path, code: str) -> None:
    pkg = tmp_path / "m3rcr" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "m3rcr" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text(code)
    problems = check_layers(collect_imports(tmp_path))
    assert problems and all("cannot follow" in p for p in problems), problems


def test_an_import_of_a_computed_name_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "m3rcr" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "m3rcr" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("import importlib\ndef load(n):\n    return importlib.import_module(f'm3rcr.{n}')\n")
    (problem,) = check_layers(collect_imports(tmp_path))
    assert problem.endswith("m3rcr/data/__init__.py:3: imports a module the test cannot follow (a computed name, "
                            "an aliased loader, exec/eval or sys.modules); write the import out so its layer is "
                            "checked"), problem


def test_the_facade_is_imported_by_nothing_below_it() -> None:
    graph = collect_imports()
    users = [i for imports in graph.values() for i in imports if i.target == ROOT]
    assert not users, users


@pytest.mark.parametrize(("module", "tier"), [("m3rcr", 7), ("m3rcr.version", 0), ("m3rcr.utils.files", 0), ("m3rcr.data.io", 1),
                                              ("m3rcr.reports.html", 4), ("m3rcr.cli.evaluate", 6)])
def test_tiers(module: str, tier: int) -> None:
    pkg = package_of(module)
    assert pkg is not None and TIERS[pkg] == tier
