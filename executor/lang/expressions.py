"""The one expression language of plans: JMESPath inside ``${...}`` templates.

JMESPath is pure, deterministic and JSON-native, so the workflow can evaluate it during replay.

- ``"${steps.fetch.output.items}"`` — the whole string is one template: the value keeps its type.
- ``"Hello ${input.name}!"`` — embedded templates are rendered as text (non-strings as JSON).
- Dicts and lists are rendered recursively; other JSON values pass through.

Scope: ``input``, ``steps.<id>.output|status|error``, ``item``/``index`` inside a foreach, and
``run`` (id, tenant, session, plan_hash). A name that does not exist is an error at validation,
never silently ``""``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

import jmespath
import jmespath.exceptions
import jmespath.parser

__all__ = [
    "ExpressionError",
    "compile_expression",
    "evaluate",
    "iter_expressions",
    "references",
    "render",
    "strip_template",
    "truthy",
]

ROOT_NAMES = frozenset({"input", "steps", "item", "index", "run"})
# Caches keyed by a plan's text remember only texts up to this long: thousands of distinct
# megabyte strings (each plan may carry some) would otherwise stay in the API's and workers' memory.
MAX_CACHED_CHARS = 4096
MAX_EXPRESSION_DEPTH = 100  # levels of an expression's syntax tree (as MAX_JSON_DEPTH for values)


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(f"expression {expression!r}: {message}")
        self.expression = expression
        self.message = message


def strip_template(expression: str) -> str:
    """``${a.b}`` and ``a.b`` are the same expression where a bare expression is expected."""
    text = expression.strip()
    spans = _spans(text)
    if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(text):
        return spans[0][2]
    return expression


def compile_expression(expression: str) -> jmespath.parser.ParsedResult:
    """The parsed expression (remembered, when short)."""
    return _compile(expression) if len(expression) <= MAX_CACHED_CHARS else _compile.__wrapped__(expression)


@lru_cache(maxsize=4096)
def _compile(expression: str) -> jmespath.parser.ParsedResult:
    """The parsed expression. jmespath's parser and evaluator, and the reference walk here, recurse
    once per level of the tree: ``((((...))))`` or ``!!!!...`` a few hundred deep overflowed the
    stack (a 500 at validation), so the tree is bounded like JSON values are."""
    try:
        parsed = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ExpressionError(expression, str(exc).replace("\n", " ")) from None
    except RecursionError:
        parsed = None
    if parsed is None or _tree_depth(parsed.parsed) > MAX_EXPRESSION_DEPTH:
        raise ExpressionError(_shown(expression), f"nests more than {MAX_EXPRESSION_DEPTH} levels deep")
    return parsed


def _tree_depth(tree: dict[str, Any]) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_EXPRESSION_DEPTH:  # deeper is too deep already: no need to walk on
            stack.extend((c, depth + 1) for c in node.get("children", ()) if isinstance(c, dict))
    return deepest


def _shown(expression: str) -> str:
    return expression if len(expression) <= 200 else expression[:200] + "..."


def evaluate(expression: str, scope: dict[str, Any]) -> Any:
    """Value of a bare expression (``${...}`` tolerated) in ``scope``."""
    expression = strip_template(expression)
    program = _program(expression) if len(expression) <= MAX_CACHED_CHARS else _program.__wrapped__(expression)
    if type(program) is tuple:
        # A chain of field names (``steps.fetch.output.items``: most of a plan's templates), looked
        # up as JMESPath's own interpreter does (``visit_field``: ``.get``, None where there is no
        # ``.get``) without building an interpreter (and its function table) per evaluation.
        value: Any = scope
        for key in program:
            try:
                value = value.get(key)
            except AttributeError:
                value = None
        return value
    try:
        return cast(jmespath.parser.ParsedResult, program).search(scope)
    except jmespath.exceptions.JMESPathError as exc:
        raise ExpressionError(expression, str(exc).replace("\n", " ")) from None


@lru_cache(maxsize=4096)
def _program(expression: str) -> tuple[str, ...] | jmespath.parser.ParsedResult:
    """The field names of an expression that is only a chain of them, else its parsed form."""
    parsed = compile_expression(expression)
    chain = _field_chain(parsed.parsed)
    return parsed if chain is None else chain


def _field_chain(node: dict[str, Any]) -> tuple[str, ...] | None:
    if node.get("type") == "field":
        return (node["value"],)
    if node.get("type") != "subexpression":
        return None
    out: list[str] = []
    for child in node.get("children", ()):  # each child applies to the one before's result
        names = _field_chain(child) if isinstance(child, dict) else None
        if names is None:
            return None
        out.extend(names)
    return tuple(out) or None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string/list/object are false."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and not value)


def render(value: Any, scope: dict[str, Any]) -> Any:
    """Render templates inside ``value`` (recursively through lists and dicts)."""
    # Exact types first (a plan's JSON has no others): inside the workflow sandbox every
    # ``isinstance`` is a wrapped Python call, and rendering runs for every step.
    kind = type(value)
    if kind is str:
        return _render_string(value, scope)
    if kind is dict:
        return {k: render(v, scope) for k, v in value.items()}
    if kind is list:
        return [render(v, scope) for v in value]
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, str):
        return _render_string(value, scope)
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    return value


def _render_string(text: str, scope: dict[str, Any]) -> Any:
    spans = _spans(text)
    if not spans:
        return text
    if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(text):
        return evaluate(spans[0][2], scope)
    parts, last = [], 0
    for start, end, expression in spans:
        result = evaluate(expression, scope)
        parts.append(text[last:start])
        parts.append(result if isinstance(result, str) else json.dumps(result, sort_keys=True))
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _spans(text: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, expression) of each ``${...}``; braces inside literals and quotes don't end it."""
    if "${" not in text:
        return ()
    return _cached_spans(text) if len(text) <= MAX_CACHED_CHARS else tuple(_scan(text))


@lru_cache(maxsize=8192)  # a plan's templates are scanned once per step run, each time the same
def _cached_spans(text: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(_scan(text))


def _scan(text: str) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    i = text.find("${")
    while i != -1:
        depth, j, quote = 1, i + 2, ""
        while j < len(text) and depth:
            ch = text[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "`'\"":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            j += 1
        if depth:  # unterminated: the rest is the expression, and it will not parse
            out.append((i, len(text), text[i + 2 :]))
            break
        out.append((i, j, text[i + 2 : j - 1]))
        i = text.find("${", j)
    return out


def iter_expressions(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """(JSON pointer, expression) for every template inside ``value``."""
    if isinstance(value, str):
        for _, _, expression in _spans(value):
            yield pointer, expression
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_expressions(v, f"{pointer}/{i}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_expressions(v, f"{pointer}/{_escape(str(k))}")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def references(expression: str) -> tuple[set[str], set[str]]:
    """(root names used, step ids referenced as ``steps.<id>``) in a bare expression."""
    short = len(expression) <= MAX_CACHED_CHARS
    roots, steps = _references(expression) if short else _references.__wrapped__(expression)
    return set(roots), set(steps)


@lru_cache(maxsize=8192)  # every run of a plan asks again for each of its steps' dependencies
def _references(expression: str) -> tuple[frozenset[str], frozenset[str]]:
    tree = compile_expression(strip_template(expression)).parsed
    roots: set[str] = set()
    steps: set[str] = set()
    _walk(tree, roots, steps, in_projection=False)
    return frozenset(roots), frozenset(steps)


def _walk(node: dict[str, Any], roots: set[str], steps: set[str], in_projection: bool) -> None:
    kind = node.get("type")
    children: list[dict[str, Any]] = [c for c in node.get("children", []) if isinstance(c, dict)]
    if kind == "field" and not in_projection:
        roots.add(node["value"])
        return
    if kind == "subexpression" or kind == "index_expression":
        chain = _flatten(node)
        head = chain[0]
        if head.get("type") == "field" and not in_projection:
            roots.add(head["value"])
            if head["value"] == "steps" and len(chain) > 1 and chain[1].get("type") == "field":
                steps.add(chain[1]["value"])
        elif head.get("type") != "field":
            _walk(head, roots, steps, in_projection)
        for rest in chain[1:]:
            if rest.get("type") not in ("field", "index"):
                _walk(rest, roots, steps, in_projection=True)
        return
    if kind in ("projection", "value_projection", "filter_projection", "flatten"):
        # The left side is evaluated against the scope; the right side against each element.
        if children:
            _walk(children[0], roots, steps, in_projection)
        for child in children[1:]:
            _walk(child, roots, steps, in_projection=True)
        return
    if kind == "pipe":
        # The right side of a pipe is evaluated against the left side's result.
        _walk(children[0], roots, steps, in_projection)
        _walk(children[1], roots, steps, in_projection=True)
        return
    if kind == "expref":
        for child in children:
            _walk(child, roots, steps, in_projection=True)
        return
    if kind == "current":
        return
    for child in children:
        _walk(child, roots, steps, in_projection)


def _flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    if node.get("type") in ("subexpression", "index_expression"):
        out: list[dict[str, Any]] = []
        for child in node["children"]:
            out.extend(_flatten(child))
        return out
    return [node]
