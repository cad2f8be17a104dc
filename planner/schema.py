"""The plan format as a model sees it, derived from the committed ``schemas/plan.schema.json``.

Two views of the one schema: ``response_schema()`` (the JSON Schema handed to providers for
structured output: the ``Plan`` definition at the root, OpenAPI-only keywords removed) and
``format_summary()`` (a compact text rendering for the system prompt: every object, its fields,
types, bounds, defaults and descriptions). Both follow the schema file, so they never drift from it.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import schemas
from schemas.plan import DURATION_PATTERN

__all__ = ["format_summary", "plan_schema", "response_schema"]

SCHEMA_FILE = Path(schemas.__file__).resolve().parent / "plan.schema.json"
_DROP = frozenset({"$schema", "$id", "discriminator", "title"})
_STEP_ORDER = (
    "tool",
    "llm",
    "code",
    "script",
    "sleep",
    "wait_for_event",
    "foreach",
    "switch",
    "subplan",
    "set",
    "fail",
)


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return SCHEMA_FILE.read_text(encoding="utf-8")


def plan_schema() -> dict[str, Any]:
    """The committed plan JSON Schema (a fresh copy)."""
    value: dict[str, Any] = json.loads(_schema_text())
    return value


def response_schema() -> dict[str, Any]:
    """The plan schema for ``response_format``: an object at the root, no OpenAPI-only keywords."""
    full = plan_schema()
    defs = full["$defs"]
    root = {**copy.deepcopy(defs["Plan"]), "$defs": defs}
    cleaned: dict[str, Any] = _clean(root)
    return cleaned


def _clean(node: Any, names: bool = False) -> Any:
    """Drop annotation keywords; ``names``: the keys are property or definition names, kept as they are."""
    if isinstance(node, dict):
        return {
            k: _clean(v, names=not names and k in ("properties", "$defs"))
            for k, v in node.items()
            if names or k not in _DROP
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def format_summary() -> str:
    """Every object of the plan format, one field per line: ``name* type [= default] — description``."""
    defs = plan_schema()["$defs"]
    steps = {
        d["properties"]["kind"]["const"]: name
        for name, d in defs.items()
        if "kind" in d.get("properties", {}) and "const" in d["properties"]["kind"]
    }
    common = set.intersection(*(set(defs[n]["properties"]) for n in steps.values())) - {"kind"}
    first = defs[steps["tool"]]
    lines = [
        "Types: expression = JMESPath, with or without ${...}; duration = seconds as a number, or "
        '"250ms", "30s", "10m", "2h", "3d", "1d12h". A field marked * is required.',
        "",
        "Plan (the document you write):",
    ]
    lines += _fields(defs["Plan"], {k: v for k, v in defs["Plan"]["properties"].items() if not k.startswith("$")})
    lines += ["", "Every step, whatever its kind, has these fields:"]
    lines += _fields(first, {k: v for k, v in first["properties"].items() if k in common})
    lines += ["", "Step kinds (set `kind` to one of them) and their own fields:"]
    for kind in sorted(steps, key=lambda k: _STEP_ORDER.index(k) if k in _STEP_ORDER else len(_STEP_ORDER)):
        d = defs[steps[kind]]
        own = {
            k: v for k, v in d["properties"].items() if k != "kind" and (k not in common or v != first["properties"][k])
        }
        doc = f" — {_one_line(d['description'])}" if d.get("description") else ""
        lines.append(f'- kind: "{kind}"{doc}')
        lines += ["  " + line for line in _fields(d, own)]
    others = sorted(n for n in defs if n not in steps.values() and n != "Plan")
    for name in others:
        d = defs[name]
        doc = f" ({_one_line(d['description']).rstrip('.')})" if d.get("description") else ""
        lines += ["", f"{name}{doc}:"]
        lines += _fields(d, d.get("properties", {}))
    return "\n".join(lines)


def _fields(owner: dict[str, Any], props: dict[str, Any]) -> list[str]:
    required = owner.get("required", [])
    out = []
    for name in sorted(props, key=lambda n: (n not in required, n != "id", n)):
        prop = props[name]
        star = "*" if name in required else ""
        default = f" = {json.dumps(prop['default'])}" if "default" in prop and prop["default"] is not None else ""
        desc = prop.get("description") or _inner_description(prop)
        if desc and (desc.startswith("A duration") or desc.startswith("A JMESPath expression")):
            desc = None  # the type says it
        doc = f" — {_one_line(desc)}" if desc else ""
        out.append(f"  {name}{star}: {_type(prop)}{default}{doc}")
    return out


def _inner_description(prop: dict[str, Any]) -> str | None:
    for option in prop.get("anyOf", []):
        if isinstance(option, dict) and option.get("description"):
            return str(option["description"])
    return None


def _type(s: dict[str, Any]) -> str:
    if "$ref" in s:
        return str(s["$ref"].rsplit("/", 1)[-1])
    if "const" in s:
        return json.dumps(s["const"])
    if "enum" in s:
        return " | ".join(json.dumps(v) for v in s["enum"])
    if "anyOf" in s or "oneOf" in s:
        options = [o for o in s.get("anyOf", s.get("oneOf", [])) if o.get("type") != "null"]
        if any(o.get("pattern") == DURATION_PATTERN for o in options):
            return "duration"
        if "discriminator" in s or all("$ref" in o and o["$ref"].endswith("Step") for o in options):
            return "Step"
        return " | ".join(_type(o) for o in options) if options else "null"
    kind = s.get("type")
    if kind == "array":
        return f"array of {_type(s.get('items', {}))}{_bounds(s, 'minItems', 'maxItems')}"
    if kind == "string":
        if str(s.get("description", "")).lower().startswith(("expression", "a jmespath expression")):
            return "expression"
        pattern = f" matching {s['pattern']}" if "pattern" in s else ""
        return f"string{pattern}{_bounds(s, 'minLength', 'maxLength')}"
    if kind in ("integer", "number"):
        return f"{kind}{_bounds(s, 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum')}"
    if kind == "object":
        return "object"
    if isinstance(kind, str):
        return kind
    return "any JSON"


def _bounds(s: dict[str, Any], low: str, high: str, xlow: str = "", xhigh: str = "") -> str:
    lo = s.get(low, s.get(xlow) if xlow else None)
    hi = s.get(high, s.get(xhigh) if xhigh else None)
    if lo is None and hi is None:
        return ""
    return f" ({'' if lo is None else lo}..{'' if hi is None else hi})"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
