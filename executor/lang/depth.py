"""How deep a client's JSON may nest (plan, inputs, event payloads): recursive code all the way
down (validation, templates, Temporal's converters, pydantic) must walk it without overflowing
the stack, so anything deeper is refused up front with the pointer of where it goes too deep."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LONE_SURROGATE", "MAX_JSON_DEPTH", "deepest", "json_problem"]

MAX_JSON_DEPTH = 100


def deepest(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The JSON pointer of the first node nested deeper than ``limit``, else None. Iterative: it
    must not itself overflow the stack on the values it exists to refuse."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, pointer, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > limit:
            return pointer or "/"
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            part = str(key).replace("~", "~0").replace("/", "~1")
            stack.append((child, f"{pointer}/{part}", depth + 1))
    return None


_SCALARS = (str, int, bool, type(None))
# JSON's "\ud800" escape parses to a str no UTF-8 encoder takes: history, hashes and the converter
# all encode UTF-8, and failed with UnicodeEncodeError (a 500 from /v1/runs).
LONE_SURROGATE = "a lone UTF-16 surrogate (such as \\ud800) is not Unicode text"


def _unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_KEYS = (str, int, float, bool, type(None))  # what json.dumps writes as an object key


def json_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> tuple[str, str, str] | None:
    """``(pointer, code, message)`` of the first node that is not plain JSON, else None: nested
    deeper than ``limit`` (``too_deep``), or ``not_json``: a string with a lone surrogate, NaN and
    Infinity (not JSON numbers, RFC 8259: Python wrote them into history, where other readers fail,
    and the API answered them as null) or a value of another type (a set, bytes, an object: encoded
    as something else, or a TypeError from the converter)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, pointer, depth = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return pointer or "/", "not_json", f"{node!r} is not a JSON number"
            continue
        if isinstance(node, str) and not _unicode(node):
            return pointer or "/", "not_json", LONE_SURROGATE
        if isinstance(node, _SCALARS):
            continue
        if not isinstance(node, dict | list | tuple):
            return pointer or "/", "not_json", f"a {type(node).__name__} is not a JSON value"
        if depth > limit:
            return pointer or "/", "too_deep", f"nested more than {limit} levels deep"
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            part = str(key).replace("~", "~0").replace("/", "~1")
            if not isinstance(key, _KEYS):
                return f"{pointer}/{part}", "not_json", f"a {type(key).__name__} is not a JSON object key"
            if isinstance(key, str) and not _unicode(key):
                return f"{pointer}/{part.encode('utf-8', 'backslashreplace').decode()}", "not_json", LONE_SURROGATE
            stack.append((child, f"{pointer}/{part}", depth + 1))
    return None
