"""What a tenant, session or run id must look like, and how deep JSON may nest: the checks every
surface runs before anything reaches Temporal.

Apart from ``executor.service.start`` (which re-exports them) so that reading a run's status or
sending it an event imports no start path (plan validation, tenancy, jsonschema).
"""

from __future__ import annotations

import re
from typing import Any

from executor.errors import InputsInvalid
from executor.lang.depth import json_problem

__all__ = ["CHILD_RUN_PATTERN", "NAME_PATTERN", "RUN_ID_REGEX", "check_depth", "check_name", "check_run_id"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# A subplan's child run: <parent run id>~<step path>~<generation> (``~`` never occurs in a submitted id).
CHILD_RUN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}(~[A-Za-z0-9_.\[\]-]{1,500}~[0-9]{1,9}){1,16}$")
# Either: what an HTTP path parameter or MCP argument naming a run must match.
RUN_ID_REGEX = rf"{NAME_PATTERN.pattern}|{CHILD_RUN_PATTERN.pattern}"


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise InputsInvalid(kind, [f"{_shown(value)} must match {NAME_PATTERN.pattern}"])
    return value


def _shown(value: object) -> str:
    """A refused value in its message, cut: a 100 KB id came back whole in the error (MCP, CLI)."""
    text = repr(value)
    return text if len(text) <= 140 else f"{text[:140]}... ({len(str(value))} characters)"


def check_run_id(value: str) -> str:
    """A run id to open: a submitted one, or a subplan's child run id."""
    if NAME_PATTERN.fullmatch(value) or CHILD_RUN_PATTERN.fullmatch(value):
        return value
    raise InputsInvalid(
        "run_id", [f"{_shown(value)} must match {NAME_PATTERN.pattern} (or be a subplan's child run id)"]
    )


def check_depth(what: str, value: Any) -> None:
    """JSON nested deeper than anything reasonable, and what is not JSON at all (NaN, a set, an
    object), is refused before it reaches Temporal, naming where it is."""
    problem = json_problem(value)
    if problem is not None:
        pointer, _, message = problem
        raise InputsInvalid(what, [f"{pointer}: {message}"])
