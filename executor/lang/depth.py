"""How deep a client's JSON may nest (plan, inputs, event payloads): recursive code all the way
down (validation, templates, Temporal's converters, pydantic) must walk it without overflowing
the stack, so anything deeper is refused up front with the pointer of where it goes too deep."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_JSON_DEPTH", "deepest"]

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
