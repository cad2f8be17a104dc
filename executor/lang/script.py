"""The script language: which host functions a script step may call, and what can be known about
its calls before it runs (pure ``ast`` analysis, shared by the validator and the workflow).

A script is Python run in the sandbox. Calling a host function suspends it; the engine performs
the call durably and resumes it with the result. ``call(fn, ...)`` only builds the description
of a call for ``parallel([...])``; it is answered inside the sandbox and is not a host call.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "HOST_FUNCTIONS",
    "INLINE_FUNCTIONS",
    "PARALLEL_FUNCTIONS",
    "TOO_DEEP",
    "LiteralCall",
    "ScriptInfo",
    "analyse",
]

# name -> (positional parameter names, keyword-only parameter names); **kwargs only for tool/compensate
HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tool": (("name",), ()),  # tool(name, **args)
    "llm": (("prompt",), ("system", "model", "output_schema", "temperature", "max_tokens")),
    "sleep": (("duration",), ()),
    "sleep_until": (("timestamp",), ()),
    "wait_for_event": (("event",), ("timeout",)),
    "parallel": (("calls",), ()),
    "now": ((), ()),
    "random": ((), ()),
    "compensate": (("name",), ()),  # compensate(tool_name, **args): undo on failure or cancel
    "fail": (("message",), ("error_type",)),
}
INLINE_FUNCTIONS = frozenset({"call"})  # answered inside the segment: pure, not a durable step
PARALLEL_FUNCTIONS = frozenset({"tool", "llm", "sleep", "sleep_until"})
_KWARGS = frozenset({"tool", "compensate"})
# What the sandbox provides without an import (monty implements a subset of these).
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class LiteralCall:
    """A host call whose function name is known statically; ``args`` holds the literal keyword
    arguments (non-literal ones are absent) and ``dynamic`` whether any argument is not literal."""

    function: str
    line: int
    first: Any  # the first positional argument when it is a literal, else None
    args: dict[str, Any]
    dynamic: bool


@dataclass
class ScriptInfo:
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, message)
    calls: list[LiteralCall] = field(default_factory=list)
    tools: set[str] = field(default_factory=set)  # literal tool names, compensations included
    events: set[str] = field(default_factory=set)
    dynamic_tools: bool = False  # some tool name is computed at run time
    uses_llm: bool = False


TOO_DEEP = "the code nests too deeply to parse"


@lru_cache(maxsize=256)
def analyse(source: str) -> ScriptInfo:
    """What the source says about its host calls, and every static problem found."""
    info = ScriptInfo()
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        info.problems.append((exc.lineno or 0, f"Python syntax error: {exc.msg}"))
        return info
    except (RecursionError, MemoryError):  # CPython's parser on 1+1+1... or ----1 thousands deep
        info.problems.append((1, f"Python syntax error: {TOO_DEEP}"))
        return info
    defined = _defined_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            _call(node, node.func.id, defined, info)
    return info


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _call(node: ast.Call, name: str, defined: set[str], info: ScriptInfo) -> None:
    if name in defined and name in HOST_FUNCTIONS:
        info.problems.append((node.lineno, f"{name!r} is a host function and cannot be redefined"))
        return
    if name in defined:
        return
    if name in INLINE_FUNCTIONS:
        _spec(node, info)
        return
    if name not in HOST_FUNCTIONS:
        if name not in _BUILTINS:
            known = ", ".join(sorted(HOST_FUNCTIONS))
            info.problems.append((node.lineno, f"unknown function {name!r} (host functions: {known}, call)"))
        return
    literal = _literal_call(node, name, info)
    if literal is not None:
        info.calls.append(literal)
        _note(literal, info)


def _spec(node: ast.Call, info: ScriptInfo) -> None:
    """``call(fn, *args, **kwargs)``: checked as the call of ``fn`` it describes."""
    fn = _literal(node.args[0]) if node.args and not isinstance(node.args[0], ast.Starred) else _Missing
    if fn is _Missing:
        info.dynamic_tools = True
        return
    if fn not in PARALLEL_FUNCTIONS:
        allowed = ", ".join(sorted(PARALLEL_FUNCTIONS))
        info.problems.append((node.lineno, f"call() describes a call for parallel(): one of {allowed}, not {fn!r}"))
        return
    inner = ast.Call(func=ast.Name(id=fn, ctx=ast.Load()), args=node.args[1:], keywords=node.keywords)
    ast.copy_location(inner, node)
    literal = _literal_call(inner, fn, info)
    if literal is not None:
        info.calls.append(literal)
        _note(literal, info)


def _literal_call(node: ast.Call, name: str, info: ScriptInfo) -> LiteralCall | None:
    positional, keywords = HOST_FUNCTIONS[name]
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        return LiteralCall(name, node.lineno, None, {}, True)  # *args / **kwargs: nothing to check
    if len(node.args) > len(positional):
        info.problems.append(
            (node.lineno, f"{name}() takes {len(positional)} positional argument(s), {len(node.args)} given")
        )
        return None
    given = {k.arg for k in node.keywords if k.arg is not None}
    if name not in _KWARGS:
        unknown = sorted(given - set(positional) - set(keywords))
        if unknown:
            info.problems.append((node.lineno, f"{name}() got unexpected keyword argument(s) {unknown}"))
            return None
    missing = [p for p in positional[len(node.args) :] if p not in given]
    if missing:
        info.problems.append((node.lineno, f"{name}() missing argument(s) {missing}"))
        return None
    first = _literal(node.args[0]) if node.args else _Missing
    args: dict[str, Any] = {}
    dynamic = first is _Missing and bool(node.args)
    for k in node.keywords:
        value = _literal(k.value)
        if value is _Missing:
            dynamic = True
        elif k.arg is not None:
            args[k.arg] = value
    if first is _Missing and positional and positional[0] in args:
        first = args[positional[0]]
    return LiteralCall(name, node.lineno, None if first is _Missing else first, args, dynamic)


def _note(call: LiteralCall, info: ScriptInfo) -> None:
    match call.function:
        case "tool" | "compensate":
            if isinstance(call.first, str):
                info.tools.add(call.first)
            else:
                info.dynamic_tools = True
                if call.first is not None:
                    info.problems.append((call.line, f"{call.function}() takes the tool name as a string"))
        case "llm":
            info.uses_llm = True
        case "wait_for_event":
            if isinstance(call.first, str) and call.first:
                info.events.add(call.first)
            else:
                message = "wait_for_event() needs the event type as a literal string (events are checked on send)"
                info.problems.append((call.line, message))
        case _:
            return


class _MissingType:
    pass


_Missing: Any = _MissingType()


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _Missing
