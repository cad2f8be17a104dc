"""JSON Schemas that come from outside (plans, tool sources, scripts): checked and validated safely.

A schema is data a tenant, a model or a remote tool server wrote, and jsonschema treats two things
in it as instructions. A ``$ref`` that is not local (``http://169.254.169.254/...``, ``file:///etc/...``)
was fetched with ``urllib`` by jsonschema's default registry when a value was validated against it: a
request from the API or worker process that no egress policy saw. And a ``$ref`` cycle that never
descends into the value (``{"$ref": "#"}``, ``A -> allOf -> B -> A``) recursed until Python's stack
ran out: a 500 at submit, a run whose workflow task failed for ever (subplan inputs), an event
refused as "maximum recursion depth exceeded". And jsonschema matches ``pattern`` and
``patternProperties`` with Python's backtracking ``re``: ``{"pattern": "^(a+)+$"}`` against 30
characters took minutes of CPU, on the API's event loop (every tenant waited) or in a workflow task.
Patterns are matched with RE2 here, in time linear in the text (no lookaround or backreferences,
which ECMA-262 patterns rarely need; a pattern RE2 cannot compile is a schema problem).

``schema_problem`` refuses both up front (with the metaschema check and a depth limit), naming
where; ``validator`` builds a validator whose registry never retrieves anything, for every place a
value is checked against such a schema (a schema that slipped past the check fails as unresolvable,
it fetches nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import jsonschema
import re2
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from executor.lang.depth import MAX_JSON_DEPTH, deepest

__all__ = ["schema_problem", "validator"]

# Keywords whose value is one subschema, a list of them, or a map of them.
_ONE = ("additionalProperties", "items", "contains", "propertyNames", "not", "if", "then", "else",
        "unevaluatedItems", "unevaluatedProperties", "additionalItems")  # fmt: skip
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
# Keywords that apply their subschemas to the very value being checked (no descent into it): a
# cycle through these and references never ends.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_REFS = ("$ref", "$dynamicRef")
MAX_CACHED_SCHEMA_CHARS = 64 * 1024


def _refuse_retrieval(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # (an attrs class)


_NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]  # (an attrs class)


_RE2_SYNTAX = "patterns are RE2 (no lookaround, no backreferences)"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the client, not to stderr


def _regex(pattern: str) -> Any:
    """The compiled pattern (remembered, when short: a compiled RE2 program can take megabytes)."""
    return _cached_regex(pattern) if len(pattern) <= 1024 else re2.compile(pattern, _RE2_OPTIONS)


@lru_cache(maxsize=4096)
def _cached_regex(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _regex(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
)


def validator(schema: Any) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator for ``schema`` that resolves only references inside it and
    matches patterns in linear time (RE2)."""
    made: jsonschema.Draft202012Validator = _Validator(schema, registry=_NO_RETRIEVAL)
    return made


def schema_problem(schema: Any) -> tuple[str, str] | None:
    """``(JSON pointer inside the schema, message)`` of the first reason ``schema`` cannot be used
    safely, else None: not a JSON Schema, nested too deep, a ``$ref`` that is not local or does not
    resolve, a nested ``$id``, or a reference cycle that never reaches into the value."""
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return "", "not a JSON value"
    # The cache holds schemas by their text: a large one is checked afresh (1,024 cached 2 MiB
    # schemas would be 2 GiB held by the API process).
    return _problem(text) if len(text) <= MAX_CACHED_SCHEMA_CHARS else _problem.__wrapped__(text)


@lru_cache(maxsize=1024)
def _problem(schema_json: str) -> tuple[str, str] | None:
    """Checking against the metaschema is most of a submit's validation time; plans reuse schemas."""
    try:
        schema = json.loads(schema_json)
    except RecursionError:
        return "", f"nested more than {MAX_JSON_DEPTH} levels deep"
    too_deep = deepest(schema)
    if too_deep is not None:
        return too_deep if too_deep != "/" else "", f"nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return "".join(f"/{p}" for p in exc.path), exc.message
    return _reference_problem(schema) or _pattern_problem(schema)


def _subschemas(node: dict[str, Any], pointer: str) -> list[tuple[str, Any, bool]]:
    """``(pointer, subschema, in_place)`` for each subschema of ``node``."""
    out: list[tuple[str, Any, bool]] = []
    for key in _ONE:
        if isinstance(node.get(key), dict | bool):
            out.append((f"{pointer}/{key}", node[key], key in _IN_PLACE_ONE))
    for key in _LIST:
        if isinstance(node.get(key), list):
            out.extend((f"{pointer}/{key}/{i}", s, key in _IN_PLACE_LIST) for i, s in enumerate(node[key]))
    for key in _MAP:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                if isinstance(sub, dict | bool):
                    part = str(name).replace("~", "~0").replace("/", "~1")
                    out.append((f"{pointer}/{key}/{part}", sub, key == "dependentSchemas"))
    return out


def _resolve(root: Any, ref: str, anchors: dict[str, str]) -> str | None:
    """The pointer a local reference names, if it names a schema of ``root``."""
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        return anchors.get(fragment)
    node = root
    for part in fragment.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return fragment if isinstance(node, dict | bool) else None


def _schema_nodes(root: Any) -> dict[str, Any]:
    """Every schema node by pointer (iteratively: the depth is bounded, the breadth is not)."""
    nodes: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        pointer, node = stack.pop()
        if pointer in nodes:
            continue
        nodes[pointer] = node
        if isinstance(node, dict):
            stack.extend((p, s) for p, s, _ in _subschemas(node, pointer))
    return nodes


def _reference_problem(root: Any) -> tuple[str, str] | None:
    nodes = _schema_nodes(root)
    anchors = {
        str(node[key]): pointer
        for pointer, node in nodes.items()
        if isinstance(node, dict)
        for key in ("$anchor", "$dynamicAnchor")
        if isinstance(node.get(key), str)
    }
    edges: dict[str, list[str]] = {}
    for pointer, node in nodes.items():
        if not isinstance(node, dict):
            continue
        if pointer and "$id" in node:
            return f"{pointer}/$id", "$id is allowed only at the schema's root"
        targets = [p for p, _, in_place in _subschemas(node, pointer) if in_place]
        for key in _REFS:
            ref = node.get(key)
            if ref is None:
                continue
            if not isinstance(ref, str) or not ref.startswith("#"):
                return f"{pointer}/{key}", f"{key} {ref!r} is not local: only references inside the schema ('#...')"
            target = _resolve(root, ref, anchors)
            if target is None:
                return f"{pointer}/{key}", f"{key} {ref!r} does not name a schema inside this one"
            if target not in nodes:  # a schema reached only through a reference (e.g. under a custom key)
                return f"{pointer}/{key}", f"{key} {ref!r} names no subschema this schema declares"
            targets.append(target)
        edges[pointer] = targets
    cycle = _cycle(edges)
    if cycle is not None:
        return cycle, "its references form a cycle that never reaches into the value (it would never end)"
    return None


def _pattern_problem(root: Any) -> tuple[str, str] | None:
    """The first ``pattern`` (or ``patternProperties`` key) RE2 cannot compile."""
    for pointer, node in _schema_nodes(root).items():
        if not isinstance(node, dict):
            continue
        found = [("pattern", node["pattern"])] if isinstance(node.get("pattern"), str) else []
        if isinstance(node.get("patternProperties"), dict):
            escaped = ((k.replace("~", "~0").replace("/", "~1"), k) for k in node["patternProperties"])
            found += [(f"patternProperties/{part}", key) for part, key in escaped]
        for where, pattern in found:
            try:
                _regex(pattern)
            except re2.error as exc:
                why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
                return f"{pointer}/{where}", f"pattern {pattern!r} is not supported ({why}): {_RE2_SYNTAX}"
    return None


def _cycle(edges: dict[str, list[str]]) -> str | None:
    """A pointer on a cycle of ``edges``, else None (iterative depth-first search)."""
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        on_path: set[str] = {start}
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack[-1]
            successors = edges.get(node, [])
            if index < len(successors):
                stack[-1] = (node, index + 1)
                nxt = successors[index]
                if nxt in on_path:
                    return nxt
                if nxt not in done:
                    on_path.add(nxt)
                    stack.append((nxt, 0))
            else:
                stack.pop()
                on_path.discard(node)
                done.add(node)
    return None
