"""Public API of the packages: ``__all__`` lists exactly what each ``__init__`` defines or imports
(like httpx's ``test_exported_members``)."""

from __future__ import annotations

import ast
import importlib
import inspect
import types
from pathlib import Path

import pytest

PACKAGES = [
    pytest.param("executor", id="executor"),
    pytest.param("schemas", id="schemas"),
    pytest.param("tools", id="tools"),
]
ALL_PACKAGES = ["executor", "schemas", "tools"]


def _public_names_bound_in_source(module: types.ModuleType) -> set[str]:
    """Names the ``__init__`` binds at top level (imports, defs, classes, assignments)."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text(encoding="utf-8"))
    names: set[str] = set()
    body = list(tree.body)
    for node in tree.body:  # a lazy package names its exports for type checkers under TYPE_CHECKING
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            body += node.body
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.module in ("__future__", "typing"):
            continue
        if isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def _public_names_at_run_time(module: types.ModuleType) -> set[str]:
    for name in module.__all__:  # a lazy package binds a name when it is first looked up
        getattr(module, name)
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in ("annotations", "Any", "TYPE_CHECKING")  # __future__ and typing
    }


@pytest.mark.parametrize("name", ALL_PACKAGES)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list)
    assert len(module.__all__) == len(set(module.__all__)), "duplicates in __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []


@pytest.mark.parametrize("name", ALL_PACKAGES)
def test_all_is_sorted(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_matches_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    modules = {n for n, v in vars(module).items() if isinstance(v, types.ModuleType)}
    in_source = _public_names_bound_in_source(module) - modules
    assert in_source == exported, (
        f"not exported: {sorted(in_source - exported)}; exported but not bound: {sorted(exported - in_source)}"
    )
    at_run_time = _public_names_at_run_time(module)
    assert at_run_time == exported, (
        f"not exported: {sorted(at_run_time - exported)}; missing: {sorted(exported - at_run_time)}"
    )


@pytest.mark.parametrize("name", ALL_PACKAGES)
def test_exported_objects_come_from_the_package(name: str) -> None:
    module = importlib.import_module(name)
    for member in module.__all__:
        value = getattr(module, member)
        if inspect.isclass(value) or inspect.isfunction(value):
            origin = value.__module__
            assert origin == name or origin.startswith(f"{name}."), f"{name}.{member} comes from {origin}"


@pytest.mark.parametrize("name", ALL_PACKAGES)
def test_star_import_gives_all(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(importlib.import_module(name).__all__)
