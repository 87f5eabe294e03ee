"""The package's structure: imports run one way, and importing the library changes nothing.

The layers (docs/architecture.md), each importing only from its own or the ones below it:

1. bottom: ``tagger.errors`` and small pure helpers, importing nothing else of tagger;
2. the core: ``tagger.models``, ``tagger.data``, aggregation, metrics, the LightningModule;
3. workflows that return results: train, evaluate, predict, export, report, bench, ...;
4. ``tagger.cli`` (and ``tagger.__main__``): Hydra entry points and resolvers, printing,
   exit codes.

The import graph is read with ``ast`` (nothing is imported); the side effects are looked
for in a fresh interpreter.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = "tagger"


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``root/package``: dotted name -> file (a package is its ``__init__``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports, anywhere in its file
    (function-level imports too)."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is the module's own package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from a.b import C`: module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules it depends on.

    A package's ``__init__`` importing its own submodules re-exports them: that edge is
    left out, and a module importing the package is counted as importing what the
    package re-exports (so a cycle through a re-export is still found).
    """
    direct = {name: imports_of(name, modules) for name in modules}
    reexports = {
        name: {target for target in targets if target.startswith(name + ".")}
        for name, targets in direct.items()
        if modules[name].name == "__init__.py"
    }
    return {
        name: {
            dependency
            for target in targets - reexports.get(name, set())
            for dependency in {target} | reexports.get(target, set())
        }
        - {name}
        for name, targets in direct.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one
    module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def is_command_line(name: str) -> bool:
    """``tagger.cli`` and its modules, and ``tagger.__main__`` (``python -m tagger``)."""
    return name in ("tagger.cli", "tagger.__main__") or name.startswith("tagger.cli.")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``module -> target`` for every import of the command line from outside it."""
    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if not is_command_line(name)
        for target in targets
        if is_command_line(target)
    )


MODULES = modules_of(REPO_ROOT, PACKAGE)
GRAPH = import_graph(MODULES)
LIBRARY = [name for name in MODULES if not is_command_line(name)]


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(GRAPH) == []


def test_nothing_outside_the_command_line_imports_it() -> None:
    assert upward_imports(GRAPH) == []


def test_the_bottom_imports_nothing_above_the_error_types() -> None:
    assert GRAPH["tagger.errors"] == set()
    assert GRAPH["tagger.config"] == set()
    assert GRAPH["tagger.optim"] <= {"tagger.errors"}


def test_the_cycle_finder_finds_planted_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert upward_imports({"tagger.x": {"tagger.cli.y"}, "tagger.cli.y": {"tagger.x"}}) == [
        "tagger.x -> tagger.cli.y"
    ]


def test_re_exports_are_no_cycle_but_a_cycle_through_one_is(tmp_path: Path) -> None:
    def package(name: str, files: dict[str, str]) -> dict[str, set[str]]:
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
        return import_graph(modules_of(tmp_path, name))

    # the package re-exports a's function; b takes it from the package: no cycle
    fine = package("fine", {"__init__.py": "from fine.a import f\n", "a.py": "def f(): ...\n",
                            "b.py": "from fine import f\nfrom . import a\n"})  # fmt: skip
    assert fine == {"fine": set(), "fine.a": set(), "fine.b": {"fine", "fine.a"}}
    assert cycles(fine) == []
    # a imports b, and b takes from the package what the package has from a: a cycle
    bad = package("bad", {"__init__.py": "from .a import f\n",
                          "a.py": "import bad.b\ndef f(): ...\n",
                          "b.py": "def g():\n    from bad import f\n"})  # fmt: skip
    assert cycles(bad) == [["bad.a", "bad.b"]]


#: Run in a fresh interpreter: import the third-party modules the library imports, note
#: the warning filters and matplotlib backend and record every OmegaConf resolver
#: registered from then on, import the modules named after "--", and print what changed.
SNAPSHOT = r"""
import importlib, json, sys, warnings
import matplotlib
from omegaconf import OmegaConf
split = sys.argv.index("--")
for name in sys.argv[1:split]:
    try:
        importlib.import_module(name)
    except ImportError:  # an optional dependency (onnx): the module imports it lazily
        pass
registered = []
register = OmegaConf.register_new_resolver
def record(name, *args, **kwargs):
    registered.append(name)
    return register(name, *args, **kwargs)
OmegaConf.register_new_resolver = record
filters, backend = list(warnings.filters), matplotlib.get_backend()
for name in sys.argv[split + 1:]:
    importlib.import_module(name)
print(json.dumps({"filters": [str(f) for f in warnings.filters if f not in filters],
                  "resolvers": registered, "backend": [backend, matplotlib.get_backend()]}))
"""


def third_party_imports(paths: list[Path]) -> list[str]:
    """The modules outside tagger that these files import (``from a.b import c``: a.b, a.b.c)."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return sorted(n for n in names if n.split(".")[0] not in (PACKAGE, "__future__"))


def import_changes(modules: list[str], paths: list[Path], pythonpath: Path) -> dict:
    """What importing ``modules`` changes in a fresh interpreter, beyond what importing the
    third-party modules of ``paths`` does (MPLBACKEND=svg: a switch to Agg shows)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "MPLBACKEND": "svg"}
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, *third_party_imports(paths), "--", *modules],
        cwd=pythonpath, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_library_registers_nothing_and_filters_no_warning() -> None:
    changes = import_changes(LIBRARY, [MODULES[name] for name in LIBRARY], REPO_ROOT)
    assert changes == {"filters": [], "resolvers": [], "backend": ["svg", "svg"]}


def test_the_side_effect_check_sees_planted_side_effects(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import warnings\nimport matplotlib\nfrom omegaconf import OmegaConf\n"
        "warnings.filterwarnings('ignore', 'some notice')\nmatplotlib.use('Agg')\n"
        "OmegaConf.register_new_resolver('planted', lambda: 1)\n"
    )
    changes = import_changes(["planted"], [planted], tmp_path)
    assert len(changes["filters"]) == 1 and "some notice" in changes["filters"][0]
    assert changes["resolvers"] == ["planted"]
    assert [backend.lower() for backend in changes["backend"]] == ["svg", "agg"]


# docs/architecture.md: its layers hold every module, and the names it gives exist.

DOC = REPO_ROOT / "docs" / "architecture.md"
#: a backticked Python name, optionally called: `ClipDataset.read`, `clip_loss()`
NAME = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(\))?")
FILE_SUFFIXES = {"py", "json", "csv", "bin", "md", "yaml", "npy", "ckpt", "png", "pt"}


def doc_layers(text: str) -> dict[int, list[str]]:
    """The layer table of docs/architecture.md: layer number -> module patterns (lines
    ``N name: pattern ...``; a layer may take several lines)."""
    block = re.search(r"<!-- layers.*?-->\s*```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no '<!-- layers -->' block"
    layers: dict[int, list[str]] = {}
    for line in block.group(1).splitlines():
        number, _, patterns = re.fullmatch(r"(\d) ([\w ]+): (.+)", line).groups()
        layers.setdefault(int(number), []).extend(patterns.split())
    return layers


def layer_of(name: str, layers: dict[int, list[str]]) -> list[int]:
    """The layers whose patterns match module ``name`` (``tagger`` itself is ``__init__``)."""
    relative = name.removeprefix(PACKAGE + ".") if name != PACKAGE else "__init__"
    return [n for n, patterns in layers.items() if any(fnmatch.fnmatchcase(relative, p)
                                                        for p in patterns)]  # fmt: skip


def test_every_module_is_in_one_layer_and_imports_only_downwards() -> None:
    layers = doc_layers(DOC.read_text())
    placed = {name: layer_of(name, layers) for name in MODULES}
    assert {name: found for name, found in placed.items() if len(found) != 1} == {}
    upward = [
        f"{name} (layer {placed[name][0]}) -> {target} (layer {placed[target][0]})"
        for name, targets in GRAPH.items()
        for target in targets
        if placed[target][0] > placed[name][0]
    ]
    assert upward == []


def _definitions(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names a module or class body defines (not imports): functions, classes, assignments."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id: node for t in targets if isinstance(t, ast.Name)}
    return names


TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
TOP_LEVEL = {name: _definitions(tree.body) for name, tree in TREES.items()}


def _class_has(cls: ast.ClassDef, attribute: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether tagger's class ``cls``, or a tagger class it derives from, defines
    ``attribute`` (in its body, or as ``self.attribute = ...`` in a method)."""
    if attribute in _definitions(cls.body):
        return True
    for node in ast.walk(cls):
        if (isinstance(node, (ast.Assign, ast.AnnAssign))
                and any(isinstance(t, ast.Attribute) and t.attr == attribute
                        and isinstance(t.value, ast.Name) and t.value.id == "self"
                        for t in (node.targets if isinstance(node, ast.Assign)
                                  else [node.target]))):  # fmt: skip
            return True
    bases = [base.id for base in cls.bases if isinstance(base, ast.Name)]
    return any(
        _class_has(node, attribute, seen | {cls.name})
        for base in bases
        if base not in seen
        for names in TOP_LEVEL.values()
        if isinstance(node := names.get(base), ast.ClassDef)
    )


def _resolves_in(definitions: dict[str, ast.AST], path: list[str]) -> bool:
    """Whether ``path`` (name, then attributes) is defined among ``definitions``."""
    node = definitions.get(path[0])
    if node is None:
        return False
    if len(path) == 1:
        return True
    return isinstance(node, ast.ClassDef) and len(path) == 2 and _class_has(node, path[1])


def resolves(name: str) -> bool:
    """Whether a qualified name exists: a tagger module (``tagger.data.clips``), a name in
    one (``tagger.data.sources.runs``), a class or function any tagger module defines, with
    an attribute (``ClipDataset.read``), or a library's (``lightning.Trainer.fit``)."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            if module in MODULES:
                return cut == len(parts) or _resolves_in(TOP_LEVEL[module], parts[cut:])
        return False
    if any(_resolves_in(definitions, parts) for definitions in TOP_LEVEL.values()):
        return True
    for cut in range(len(parts), 0, -1):  # a library: import the longest module prefix
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def doc_names(text: str) -> list[str]:
    """The backticked Python names of a Markdown text (file names and the config
    overrides, paths and expressions around them are not names)."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    names = [match.group(1) for span in spans if (match := NAME.fullmatch(span))]
    return [name for name in names if name.rpartition(".")[2] not in FILE_SUFFIXES]


def test_the_architecture_page_names_only_what_exists() -> None:
    names = doc_names(DOC.read_text())
    assert len(names) > 40  # the batch's whole path is named
    assert [name for name in names if not resolves(name)] == []


def test_the_name_check_refuses_what_does_not_exist() -> None:
    assert resolves("ClipDataset.__getitems__") and resolves("tagger.data.sources.runs")
    assert resolves("ClipDataset.consecutive")  # set in __init__
    assert resolves("StoreDataModule.train_dataloader")  # from its base, ClipDataModule
    for missing in ("ClipDataset.read_rows", "tagger.data.sources.nothing", "no_such_function",
                    "tagger.nothing", "lightning.Trainer.no_such_method"):  # fmt: skip
        assert not resolves(missing), missing
    assert doc_names("`a.b` `x=1` `c()` `metrics.json` `d/e` ```\n`f`\n```") == ["a.b", "c"]


@pytest.mark.parametrize("name", ["tagger.errors", "tagger.config"])
def test_the_bottom_imports_no_third_party_module_but_the_standard_library(name: str) -> None:
    stdlib = sys.stdlib_module_names
    imported = third_party_imports([MODULES[name]])
    assert [module for module in imported if module.split(".")[0] not in stdlib] == []
