"""Reading plans from JSON or YAML files or text; a parse error is a PlanInvalid like any other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from executor.errors import PlanInvalid, PlanIssue

__all__ = ["load_plan"]

_SUFFIXES = (".json", ".yaml", ".yml")


def load_plan(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A plan as a dict, from a mapping, a file path, or JSON/YAML text."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, Path) or (
        "\n" not in source and (source.endswith(_SUFFIXES) or Path(source).is_file())
    ):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PlanInvalid([PlanIssue("", f"cannot read plan file {str(path)!r}: {exc.strerror}", code="parse")]) from None
        return _parse(text, str(path))
    return _parse(source, "<text>")


def _parse(text: str, origin: str) -> dict[str, Any]:
    stripped = text.lstrip()
    try:
        data = json.loads(text) if stripped.startswith("{") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise PlanInvalid([PlanIssue("", f"{origin}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", code="parse")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanInvalid([PlanIssue("", f"{origin}: invalid YAML{where}: {problem}", code="parse")]) from None
    if not isinstance(data, dict):
        raise PlanInvalid([PlanIssue("", f"{origin}: a plan is a mapping/object, not {type(data).__name__}", code="parse")])
    return data
