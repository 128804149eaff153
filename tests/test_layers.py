"""The dependency order of the folders, and no import cycles (ARCHITECTURE.md, "Dependencies").

The installed package ``evoir`` is five folders: ``cli → search → backends → passes → evoir``
(the core). A module may import from its own layer or from layers to its right, never to its
left, and evoir's modules never import each other in a circle.

Everything here reads the source with ``ast``: no module is imported, so the test is fast and a
module that fails to import still gets checked. Every import counts: at module level, inside
functions and methods, under ``if TYPE_CHECKING:``, absolute (``evoir.x.y``) and relative
(``from ..x import y``), each resolved against the importing module's installed dotted name.
``importlib.import_module("evoir.x")`` with a literal name counts too; a computed name
(``import_module(f"{__name__}.{name}")``) is out of reach of ``ast``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder at the repository root → installed package (pyproject's [tool.setuptools.package-dir])
FOLDERS = {
    "evoir": "evoir",
    "passes": "evoir.passes",
    "backends": "evoir.backends",
    "search": "evoir.search",
    "cli": "evoir.cli",
}

# left to right: a module may import from its own layer or from any layer after it
LAYERS = ("evoir.cli", "evoir.search", "evoir.backends", "evoir.passes", "evoir")

# the top-level names the folders would have if imported by path instead of installed name
BARE_NAMES = {folder for folder in FOLDERS if folder != "evoir"}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, as installed: evoir.backends.onnx.import_ops
    path: Path
    is_package: bool  # an __init__.py
    root: Path = ROOT

    @property
    def where(self) -> str:
        return self.path.relative_to(self.root).as_posix()


@dataclass(frozen=True)
class Import:
    source: Module
    target: str  # dotted name of the evoir module imported (a package means its __init__)
    line: int
    in_function: bool
    type_checking: bool

    def __str__(self) -> str:
        how = []
        if self.in_function:
            how.append("inside a function")
        if self.type_checking:
            how.append("under TYPE_CHECKING")
        extra = f" ({', '.join(how)})" if how else ""
        return f"{self.source.name} imports {self.target}  [{self.source.where}:{self.line}]{extra}"


@cache
def modules(root: Path = ROOT) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join([package, *parts])
            # a stray file in the core folder that shadows another folder's package would make
            # the mapping ambiguous (evoir/search/ once lived there): refuse it outright
            assert name not in found, f"{path} and {found[name].path} are both {name}"
            found[name] = Module(name, path, is_package, root)
    return found


def layer_of(name: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return i
    raise ValueError(name)


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ValueError(f"{module.where}: relative import beyond the top-level package")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{target}" if target else base


def _known(dotted: str, mods: dict[str, Module]) -> str:
    """The evoir module an import of ``dotted`` loads: itself, or (for ``evoir.x.name`` where
    ``name`` is not a module) the longest prefix that is one."""
    while dotted not in mods and "." in dotted:
        dotted = dotted.rpartition(".")[0]
    return dotted


class _Collector(ast.NodeVisitor):
    def __init__(self, module: Module, mods: dict[str, Module]):
        self.module = module
        self.mods = mods
        self.found: list[tuple[str, int, bool, bool]] = []  # (dotted, line, in_function, type_checking)
        self.bare: list[tuple[str, int]] = []  # imports of `passes`, `cli`... by their folder names
        self._function_depth = 0
        self._type_checking_depth = 0

    def _add(self, dotted: str, line: int) -> None:
        top = dotted.partition(".")[0]
        if top == "evoir":
            self.found.append((dotted, line, self._function_depth > 0, self._type_checking_depth > 0))
        elif top in BARE_NAMES:
            self.bare.append((dotted, line))

    def _function(self, node) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = (
            test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
        )
        if name == "TYPE_CHECKING":
            self._type_checking_depth += 1
            for child in node.body:
                self.visit(child)
            self._type_checking_depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = (
            func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        )
        if name in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and not first.value.startswith(".")
            ):
                self._add(first.value, node.lineno)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = _resolve_relative(self.module, node.level, node.module)
        else:
            base = node.module or ""
        for alias in node.names:
            # `from pkg import name` imports the submodule pkg.name when there is one
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and sub in self.mods:
                self._add(sub, node.lineno)
            else:
                self._add(base, node.lineno)


@cache
def _collected(root: Path = ROOT) -> tuple[tuple[Import, ...], tuple[str, ...]]:
    mods = modules(root)
    imports: list[Import] = []
    bare: list[str] = []
    for module in mods.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        collector = _Collector(module, mods)
        collector.visit(tree)
        for dotted, line, in_function, type_checking in collector.found:
            found = Import(module, _known(dotted, mods), line, in_function, type_checking)
            if found not in imports:  # `from x import a, b` is one import of x
                imports.append(found)
        bare.extend(f"{module.where}:{line}: imports {dotted}" for dotted, line in collector.bare)
    return tuple(imports), tuple(bare)


def all_imports(root: Path = ROOT) -> tuple[Import, ...]:
    return _collected(root)[0]


def _folder_report(items: list[tuple[Module, str]]) -> str:
    """Lines grouped under the folder of the module they come from."""
    by_folder: dict[str, list[str]] = {}
    for module, line in items:
        by_folder.setdefault(module.where.split("/")[0] + "/", []).append(line)
    out = []
    for folder in FOLDERS:
        lines = by_folder.get(folder + "/")
        if lines:
            out.append(f"{folder}/ ({len(lines)}):")
            out.extend(f"  {line}" for line in lines)
    return "\n".join(out)


def layer_violations(root: Path = ROOT) -> list[tuple[Module, str]]:
    return [
        (i.source, f"{i}: {LAYERS[layer_of(i.source.name)]} may not import {LAYERS[layer_of(i.target)]}")
        for i in all_imports(root)
        if layer_of(i.target) < layer_of(i.source.name)
    ]


def import_graph(root: Path = ROOT) -> nx.DiGraph:
    """Module → module it imports, over evoir's modules; each edge keeps its import lines."""
    graph = nx.DiGraph()
    graph.add_nodes_from(modules(root))
    for i in all_imports(root):
        if i.target != i.source.name:
            graph.add_edge(i.source.name, i.target)
            graph.edges[i.source.name, i.target].setdefault("imports", []).append(i)
    return graph


def knots(graph: nx.DiGraph) -> list[list[str]]:
    """The strongly connected components with more than one module: each is one or more cycles."""
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """For each module of each knot, the shortest cycle through each of its edges inside the
    knot: every edge of a knot lies on one of them, so each circle is named without listing the
    exponentially many simple cycles a large knot can have."""
    found, seen = [], set()
    for knot in knots(graph):
        sub = graph.subgraph(knot)
        for start in knot:
            for succ in sorted(sub.successors(start)):
                path = nx.shortest_path(sub, succ, start)  # exists: same component
                cycle = [start, *path[:-1]]
                k = cycle.index(min(cycle))  # one rotation per cycle
                cycle = cycle[k:] + cycle[:k]
                if tuple(cycle) not in seen:
                    seen.add(tuple(cycle))
                    found.append(cycle)
    return sorted(found, key=lambda c: (len(c), c))


def _describe(graph: nx.DiGraph, cycle: list[str]) -> str:
    lines = [" → ".join([*cycle, cycle[0]])]
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        lines.extend(f"    {i}" for i in graph.edges[a, b]["imports"])
    return "\n".join(lines)


def cycle_report(root: Path = ROOT) -> list[tuple[Module, str]]:
    graph = import_graph(root)
    mods = modules(root)
    items = [(mods[k[0]], "knot: " + ", ".join(k)) for k in knots(graph)]
    return items + [(mods[c[0]], _describe(graph, c)) for c in cycles(graph)]


def test_the_collector_sees_the_folders():
    # guards the test itself: if the folders moved, the other tests would pass vacuously
    mods = modules()
    for package in FOLDERS.values():
        assert package in mods, f"no {package}/__init__.py under {ROOT}"
    assert sum(i.source.name.startswith("evoir.cli.") for i in all_imports()) > 10
    assert sum(i.target.startswith("evoir.passes") for i in all_imports()) > 10


def test_no_imports_by_folder_name():
    # `import passes` works only from the repository root, never once installed
    bare = _collected()[1]
    if bare:
        pytest.fail("imports by folder name instead of evoir.<package>:\n" + "\n".join(bare), pytrace=False)


def test_every_evoir_import_names_a_module():
    mods = modules()
    missing = [(i.source, str(i)) for i in all_imports() if i.target not in mods]
    if missing:
        pytest.fail("imports of evoir modules that do not exist:\n" + _folder_report(missing), pytrace=False)


def test_layers_point_one_way():
    wrong = layer_violations()
    if wrong:
        pytest.fail(
            f"{len(wrong)} import(s) against the order {' → '.join(LAYERS)} "
            "(a module imports only from its own layer or from those to its right):\n"
            + _folder_report(wrong),
            pytrace=False,
        )


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    if found:
        pytest.fail(
            f"{len(found)} import cycle(s) in {len(knots(graph))} knot(s) among evoir's modules "
            "(imports inside functions and under TYPE_CHECKING count); move what both sides need "
            "into a module both import:\n" + _folder_report(cycle_report()),
            pytrace=False,
        )


# The checker on a small tree of its own: it must see each kind of import, or the two tests
# above would pass on a tree that breaks the rules.

_FAKE = {
    "evoir/__init__.py": "",
    "evoir/graph.py": "import json\n",
    "evoir/ops/__init__.py": "from . import conv\n",
    "evoir/ops/conv.py": "from ..graph import Graph\n",
    "passes/__init__.py": "from . import widen\n",
    "passes/widen.py": (
        "from evoir.graph import Graph\n"
        "def f():\n"
        "    from ..backends.lower import lower  # inside a function, relative, up a layer\n"
    ),
    "backends/__init__.py": "",
    "backends/lower.py": (
        "from typing import TYPE_CHECKING\n"
        "from evoir.passes import widen\n"
        "if TYPE_CHECKING:\n"
        "    from .onnx import Thing\n"
    ),
    "backends/onnx.py": "from . import lower\n",
    "search/__init__.py": "",
    "search/engine.py": "import importlib\nimportlib.import_module('evoir.cli.main')\n",
    "cli/__init__.py": "",
    "cli/main.py": "class C:\n    def m(self):\n        import evoir.search.engine\n",
}


def test_the_checker_on_a_small_tree(tmp_path):
    for name, text in _FAKE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    seen = {(i.source.name, i.target, i.line, i.in_function, i.type_checking) for i in all_imports(tmp_path)}
    assert seen == {
        ("evoir.ops", "evoir.ops.conv", 1, False, False),
        ("evoir.ops.conv", "evoir.graph", 1, False, False),
        ("evoir.passes", "evoir.passes.widen", 1, False, False),
        ("evoir.passes.widen", "evoir.graph", 1, False, False),
        ("evoir.passes.widen", "evoir.backends.lower", 3, True, False),
        ("evoir.backends.lower", "evoir.passes.widen", 2, False, False),
        ("evoir.backends.lower", "evoir.backends.onnx", 4, False, True),
        ("evoir.backends.onnx", "evoir.backends.lower", 1, False, False),
        ("evoir.search.engine", "evoir.cli.main", 2, False, False),
        ("evoir.cli.main", "evoir.search.engine", 3, True, False),
    }
    wrong = "\n".join(line for _, line in layer_violations(tmp_path))
    assert "evoir.passes.widen imports evoir.backends.lower  [passes/widen.py:3] (inside a function)" in wrong
    assert "evoir.search.engine imports evoir.cli.main  [search/engine.py:2]" in wrong
    assert len(layer_violations(tmp_path)) == 2
    graph = import_graph(tmp_path)
    assert knots(graph) == [
        ["evoir.backends.lower", "evoir.backends.onnx", "evoir.passes.widen"],
        ["evoir.cli.main", "evoir.search.engine"],
    ]
    assert cycles(graph) == [
        ["evoir.backends.lower", "evoir.backends.onnx"],
        ["evoir.backends.lower", "evoir.passes.widen"],
        ["evoir.cli.main", "evoir.search.engine"],
    ]
