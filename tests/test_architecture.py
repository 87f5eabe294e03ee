"""The package's structure: imports run one way, and importing the library changes nothing.

Which module may import which (the layers of docs/architecture.md, no cycle, ``tagger.data``
never importing ``tagger.prepare``) is stated once, as the import-linter contracts of
pyproject.toml (``[tool.importlinter]``): ``lint-imports`` checks them, and the tests here
run it, and run it on copies of the package with a planted import that each contract must
refuse. The side effects of importing are looked for in a fresh interpreter, and every
name docs/architecture.md gives must exist.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
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


def is_command_line(name: str) -> bool:
    """``tagger.cli`` and its modules, and ``tagger.__main__`` (``python -m tagger``)."""
    return name in ("tagger.cli", "tagger.__main__") or name.startswith("tagger.cli.")


MODULES = modules_of(REPO_ROOT, PACKAGE)
LIBRARY = [name for name in MODULES if not is_command_line(name)]


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess:
    """``lint-imports`` (import-linter, a dev dependency) on the package ``tagger`` found in
    ``cwd``, with the contracts of this repository's pyproject.toml (only those with the
    ids ``contracts``, if given)."""
    command = [sys.executable, "-c", "import sys; from importlinter.cli import "
               "lint_imports_command; sys.exit(lint_imports_command())",
               "--no-cache", "--no-logo", *(f"--contract={c}" for c in contracts),
               str(REPO_ROOT / "pyproject.toml")]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(cwd)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_the_import_contracts_hold() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", result.stdout), result.stdout


#: A planted import (or module) each contract of pyproject.toml must refuse: contract id,
#: then file of the package -> text appended to it.
PLANTED = {
    "an upward import": ("layers", {"errors.py": "import tagger.cli\n"}),
    "a module in no layer": ("layers", {"unplaced.py": "from tagger.errors import ConfigError\n"}),
    "a bottom helper importing another": ("bottom", {"optim.py": "from tagger import confine\n"}),
    "data importing prepare in a function": (
        "data-reads-prepare-writes",
        {"data/sampler.py": "\ndef planted():\n    from tagger.prepare import audio\n"},
    ),
    "a cycle between two modules of a package": (
        "acyclic", {"data/sources.py": "\ndef planted():\n    from tagger.data import store\n"},
    ),
    "a cycle through a function-level import": (
        "acyclic", {"metrics.py": "\ndef planted():\n    from tagger import module\n"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("planted", PLANTED)
def test_each_contract_refuses_a_planted_import(planted: str, tmp_path: Path) -> None:
    contract, files = PLANTED[planted]
    copy = tmp_path / PACKAGE
    shutil.copytree(REPO_ROOT / PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert lint_imports(tmp_path, contract).returncode == 0  # the copy, before the plant
    for file, text in files.items():
        with open(copy / file, "a") as f:
            f.write(text)
    result = lint_imports(tmp_path, contract)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 kept, 1 broken" in result.stdout


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


@pytest.mark.slow  # a new interpreter imports the whole library
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


# docs/architecture.md: the names it gives exist.

DOC = REPO_ROOT / "docs" / "architecture.md"
#: a backticked Python name, optionally called: `ClipDataset.read`, `clip_loss()`
NAME = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(\))?")
FILE_SUFFIXES = {"py", "json", "csv", "bin", "md", "yaml", "npy", "ckpt", "png", "pt", "toml"}


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
