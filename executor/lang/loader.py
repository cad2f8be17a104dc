"""Reading plans from JSON or YAML files or text; a parse error is a PlanInvalid like any other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from executor.errors import PlanInvalid, PlanIssue

if TYPE_CHECKING:
    import yaml

__all__ = ["MAX_PLAN_FILE_BYTES", "load_plan"]

_SUFFIXES = (".json", ".yaml", ".yml")
# A plan file is read whole: bounded, so a path like /dev/zero or a runaway file fails with a
# message instead of filling memory. Far above any plan a run can take (its start input must fit
# Temporal's 2 MB payload limit), so `validate` still checks plans too large to submit.
MAX_PLAN_FILE_BYTES = 16 * 1024 * 1024
# Values (objects, arrays and scalars) in a plan file once parsed: a 2 MiB JSON plan holds at most
# about a million.
MAX_PLAN_VALUES = 1_000_000


def load_plan(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A plan as a dict, from a mapping, a file path, or JSON/YAML text."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, Path) or _looks_like_path(source):
        path = Path(source)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_PLAN_FILE_BYTES + 1)
            if len(data) > MAX_PLAN_FILE_BYTES:
                raise PlanInvalid(
                    [PlanIssue("", f"plan file {str(path)!r} is larger than {MAX_PLAN_FILE_BYTES} bytes", code="parse")]
                )
            text = data.decode("utf-8")
        except OSError as exc:
            raise PlanInvalid(
                [PlanIssue("", f"cannot read plan file {str(path)!r}: {exc.strerror}", code="parse")]
            ) from None
        except UnicodeDecodeError as exc:
            raise PlanInvalid(
                [PlanIssue("", f"plan file {str(path)!r} is not UTF-8: {exc.reason}", code="parse")]
            ) from None
        return _parse(text, str(path))
    return _parse(source, "<text>")


def _looks_like_path(source: str) -> bool:
    text = source.strip()
    if "\n" in text or text.startswith(("{", "[")):
        return False
    if text.endswith(_SUFFIXES):
        return True
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # e.g. a name too long to be a path: it is text
        return False


def _parse(text: str, origin: str) -> dict[str, Any]:
    try:
        data = _parse_any(text, origin)
    except RecursionError:  # both parsers recurse once per level: [[[[... thousands deep
        raise PlanInvalid([PlanIssue("", f"{origin}: nested too deeply to parse", code="parse")]) from None
    if _expands_past(data, MAX_PLAN_VALUES):
        message = f"{origin}: more than {MAX_PLAN_VALUES} values once YAML aliases are expanded"
        raise PlanInvalid([PlanIssue("", message, code="parse")])
    if not isinstance(data, dict):
        raise PlanInvalid(
            [PlanIssue("", f"{origin}: a plan is a mapping/object, not {type(data).__name__}", code="parse")]
        )
    return data


def _expands_past(value: Any, limit: int) -> bool:
    """Whether ``value`` has more than ``limit`` nodes counted as a JSON document would hold them:
    a YAML alias is one node in memory and a copy everywhere after it (a "billion laughs" file
    of a few hundred bytes is 10^9 values, and validation walked them all)."""
    stack = [value]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _parse_any(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        # YAML is a superset of JSON: try it, and blame JSON only for text that is JSON-shaped.
        import yaml  # here: a JSON plan (what tools write) does not pay for loading it

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            if text.lstrip().startswith("{"):
                e = json_error
                raise PlanInvalid(
                    [
                        PlanIssue(
                            "", f"{origin}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", code="parse"
                        )
                    ]
                ) from None
            _raise_yaml(exc, origin)


def _raise_yaml(exc: yaml.YAMLError, origin: str) -> NoReturn:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    raise PlanInvalid([PlanIssue("", f"{origin}: invalid YAML{where}: {problem}", code="parse")]) from None
