"""Where a tool call may name a tenant secret: ``{"$secret": "NAME"}``, only where the plan wrote it.

The tool activity replaces a reference with the secret's value. It used to replace every reference
it found in the rendered arguments, so the same object arriving as *data* (an event payload, a
tool's or an llm's JSON output, a run input spliced in by a template) let whoever controls that
data pick a secret and have it sent wherever the plan sends the value: a comment body, a query
string. Rendering keeps a literal reference where it is (templates are strings, replaced in
place), so the workflow lists the positions of the plan's own references in the call
(``literal_refs``) and the activity resolves those and refuses any other.

A script's references are those its code builds: data entering the sandbox (inputs, host call
answers) has its references disarmed (``disarm``) so it cannot pass one on.
"""

from __future__ import annotations

import copy
import re
from typing import Any

__all__ = ["DATA_KEY", "SECRET_KEY", "disarm", "is_ref", "literal_refs", "ref_pointers", "secret_names"]

SECRET_KEY = "$secret"
DATA_KEY = "$data"  # added to a reference that arrived as data: no longer a reference


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and SECRET_KEY in value


def ref_pointers(value: Any) -> list[str]:
    """JSON pointers of every secret reference in ``value`` (iterative: data may nest deep)."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, pointer = stack.pop()
        if is_ref(node):
            found.append(pointer)
        elif isinstance(node, dict):
            stack.extend((v, f"{pointer}/{_escape(str(k))}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{pointer}/{i}") for i, v in enumerate(node))
    return sorted(found)


def literal_refs(args: Any) -> list[str]:
    """The positions of the references a plan's (unrendered) arguments write with a literal name.
    A name that is a template would let data choose the secret: not honoured."""
    return [p for p in ref_pointers(args) if _literal_name(_at(args, p))]


def disarm(value: Any, keep: list[str] | None = None) -> Any:
    """``value`` with every secret reference in it, but those at the pointers ``keep``, turned
    into plain data (``{"$secret": n, "$data": true}``): what a script receives can be passed on,
    but never resolved. ``value`` itself when it has none (the common case: no copy)."""
    found = [p for p in ref_pointers(value) if p not in (keep or ())]
    if not found:
        return value
    value = copy.deepcopy(value)
    for pointer in found:
        ref = _at(value, pointer)
        ref[DATA_KEY] = True
    return value


# A reference written in text (a script's code): "$secret": "NAME", either quote.
_IN_TEXT = re.compile(r"""["']\$secret["']\s*:\s*["']([^"']*)["']""")


def secret_names(plan: Any) -> set[str]:
    """Every secret a plan (as JSON) names: its references, and those written in its text (script
    code). A replanned revision may name only secrets its run's plan already named: the model
    writing it read step outputs and errors, which are data."""
    names: set[str] = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if is_ref(node):
            names.add(str(node[SECRET_KEY]))
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and "$secret" in node:
            names.update(_IN_TEXT.findall(node))
    return names


def _literal_name(ref: Any) -> bool:
    name = ref[SECRET_KEY]
    return isinstance(name, str) and "${" not in name


def _at(value: Any, pointer: str) -> Any:
    for part in pointer.split("/")[1:]:
        value = value[int(part)] if isinstance(value, list) else value[part.replace("~1", "/").replace("~0", "~")]
    return value


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
