"""The committed JSON Schema: generated from the pydantic model, valid, and in agreement with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from executor.lang.loader import load_plan
from schemas.generate import SCHEMA_ID, SCHEMA_PATH, plan_schema, render
from schemas.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("examples/*.json")])


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(committed: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(committed, format_checker=jsonschema.FormatChecker())


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        f"{SCHEMA_PATH.relative_to(ROOT)} is out of date with schemas/plan.py: run `make schema`"
    )


def test_committed_schema_is_valid_draft_2020_12(committed: dict[str, Any]) -> None:
    assert committed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert jsonschema.validators.validator_for(committed) is jsonschema.Draft202012Validator
    jsonschema.Draft202012Validator.check_schema(committed)
    assert committed["$id"] == SCHEMA_ID
    assert committed == plan_schema()


def test_schema_describes_every_step_kind(committed: dict[str, Any]) -> None:
    text = json.dumps(committed)
    for kind in (
        "tool",
        "llm",
        "code",
        "sleep",
        "wait_for_event",
        "foreach",
        "switch",
        "subplan",
        "set",
        "fail",
    ):
        assert f'"const": "{kind}"' in text, kind


@pytest.mark.parametrize("path", EXAMPLES or [None], ids=lambda p: p.name if p else "none")
def test_example_matches_the_committed_schema(path: Path | None, validator: jsonschema.Draft202012Validator) -> None:
    if path is None:
        pytest.skip("no example plans in examples/ yet")
    raw = load_plan(path)
    assert isinstance(raw.get("$schema"), str), f"{path.name} has no $schema"
    errors = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(raw)]
    assert errors == []
    Plan.model_validate(raw)


# ---- agreement: what the model rejects, the JSON Schema rejects too -----------------------------


def _set(sid: str = "a", **fields: Any) -> dict[str, Any]:
    return {"id": sid, "kind": "set", "value": 1, **fields}


def _plan(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "p", "steps": list(steps or [_set()]), **fields}


INVALID: dict[str, dict[str, Any]] = {
    "missing name": {"steps": [_set()]},
    "empty steps": {"name": "p", "steps": []},
    "unknown kind": _plan({"id": "a", "kind": "teleport"}),
    "missing kind": _plan({"id": "a", "value": 1}),
    "bad id": _plan(_set("1a")),
    "extra step field": _plan(_set(colour="red")),
    "extra top-level field": _plan(colour="red"),
    "args not an object": _plan({"id": "a", "kind": "tool", "tool": "t", "args": [1]}),
    "max_attempts 0": _plan(_set(retry={"max_attempts": 0})),
    "temperature 3": _plan({"id": "a", "kind": "llm", "prompt": "p", "temperature": 3}),
    "empty event": _plan({"id": "a", "kind": "wait_for_event", "event": ""}),
    "on_error enum": _plan(_set(on_error="ignore")),
    "empty when": _plan(_set(when="")),
    "nested extra in foreach": _plan({"id": "f", "kind": "foreach", "items": "input.x", "steps": [_set("b", zz=1)]}),
    "extra in a switch case": _plan(
        {"id": "w", "kind": "switch", "cases": [{"when": "input.x", "steps": [_set("b")], "zz": 1}]}
    ),
    "invalid subplan": _plan({"id": "s", "kind": "subplan", "plan": {"name": "c", "steps": []}}),
    "max_parallel 0": _plan(limits={"max_parallel": 0}),
}
INVALID_DURATIONS = {
    "bad sleep duration": _plan({"id": "a", "kind": "sleep", "duration": "5 fortnights"}),
    "bad timeout": _plan(_set(timeout="soon")),
    "bad deadline": _plan(limits={"deadline": "forever"}),
}


def _cases() -> list[Any]:
    cases = [pytest.param(raw, id=name) for name, raw in INVALID.items()]
    cases += [pytest.param(raw, id=name) for name, raw in INVALID_DURATIONS.items()]
    return cases


@pytest.mark.parametrize("raw", _cases())
def test_invalid_for_the_model_is_invalid_for_the_schema(
    raw: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    with pytest.raises(ValidationError):
        Plan.model_validate(raw)
    assert not validator.is_valid(raw), "the JSON Schema accepts a plan the model rejects"


VALID = {
    "minimal": _plan(),
    "with $schema": _plan(**{"$schema": "../schemas/plan.schema.json"}),
    "nested": _plan(
        {
            "id": "f",
            "kind": "foreach",
            "items": "input.xs",
            "steps": [
                {
                    "id": "w",
                    "kind": "switch",
                    "cases": [{"when": "item", "steps": [_set("b", retry={"max_attempts": 2})]}],
                    "default": [{"id": "z", "kind": "sleep", "duration": "1m"}],
                }
            ],
        },
        {"id": "s", "kind": "subplan", "plan": _plan(_set("c"))},
        {"id": "e", "kind": "wait_for_event", "event": "go", "timeout": "1d12h"},
    ),
}


@pytest.mark.parametrize("raw", list(VALID.values()), ids=list(VALID))
def test_valid_for_the_model_is_valid_for_the_schema(
    raw: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    Plan.model_validate(raw)
    assert validator.is_valid(raw), [e.message for e in validator.iter_errors(raw)]


def test_numeric_duration_valid_for_both(validator: jsonschema.Draft202012Validator) -> None:
    raw = _plan({"id": "a", "kind": "sleep", "duration": 90})
    assert validator.is_valid(raw)
    Plan.model_validate(raw)
