"""What the planner says to the model: the system prompt, the goal or revision request, repairs.

The system prompt carries the plan format (derived from the committed JSON Schema), the tenant's
tool catalog (names, descriptions, argument schemas) and the rules a good plan follows. A repair
prompt feeds back the validator's findings verbatim: JSON pointer, step id, message and code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from executor.errors import PlanIssue
from planner.diff import pretty
from planner.schema import format_summary

__all__ = ["goal_prompt", "render_catalog", "repair_prompt", "revision_prompt", "system_prompt"]

_INTRO = """\
You are the planner of duraplan. You turn a goal into a plan: a JSON document that duraplan runs
durably on Temporal. Steps run as soon as the steps they depend on have finished, so independent
steps run in parallel. Answer with exactly one JSON object, the plan, and nothing else: no prose,
no markdown fences."""

_EXPRESSIONS = """\
Expressions are JMESPath inside ${...}. A string that is exactly one "${...}" keeps the value's
type ("${steps.fetch.output.items}" is a list); text around it renders a string ("Hello
${input.name}"). Names in scope: input (the run inputs), steps.<id>.output / .status / .error,
item and index (inside a foreach only), run.id / run.tenant / run.session. The bare-expression
fields (when, foreach items and output, switch case when) take the expression with or without
${...}. A name that does not resolve is an error. In JMESPath, literals are in backticks
(`10`, `"text"`) and ! binds tightly: write !(steps.a.output.ok)."""

_RULES = """\
Rules:
1. Use only the tools listed below, by their exact names, with arguments that satisfy their
   argument schemas. Never invent a tool; if no tool fits, use a code, llm or set step.
2. Expose parallelism. A step that uses another step's output references it with
   ${steps.<id>.output...}, which already orders the two. Add depends_on only when a step must
   wait for a side effect whose output it does not use. Never chain independent steps.
3. Reference outputs only of steps in the same block or an enclosing one; steps nested in a
   foreach or switch are visible only inside it: reference the container step instead.
4. Step ids are unique across the whole plan and match ^[A-Za-z_][A-Za-z0-9_]{0,63}$.
5. Declare every run input the plan reads in `inputs` (a JSON Schema) and read it as ${input.<name>}.
6. Set `output` to what the caller wants back. Keep the plan minimal: no step without a purpose.
7. Side-effecting tools get idempotency keys and retries from duraplan; add a `compensate` action
   to a side effect that must be undone when the run fails later."""

_SCRIPTS = """\
A step of kind "script" runs Python (a sandboxed subset: no imports of I/O modules, no files,
no network) where every call of a host function is a durable step: it survives crashes and is
never repeated once done. Prefer a script when the logic is a loop with early exits, a retry
that depends on what a tool returned, or "ask until the answer validates"; prefer plain steps
for a fixed DAG. Host functions, called directly by name:
  tool("name", **args) -> the tool's output        llm(prompt, output_schema=None, model=None)
  sleep("1h") / sleep_until("2030-01-01T00:00:00Z")  wait_for_event("type", timeout="24h") -> payload
  parallel([call("tool", "name", **args), call("sleep", "1s"), ...]) -> list of results, run at once
  now() -> ISO time   random() -> float   compensate("tool", **args): undo if the run fails later
  fail("message", error_type="...")
Tool names must be string literals from the tool list; a failed call raises an exception the
script may catch. Step `inputs` (templates) become globals; the last expression is the output.
Example: {"id": "poll", "kind": "script", "inputs": {"url": "${input.url}"},
"code": "for i in range(5):\n    r = tool('http.request', url=url)\n    if r['status'] == 200:\n"
"        break\n    sleep('1m')\nr"}"""

_EXAMPLE = {
    "name": "greet_many",
    "description": "Greet every name in parallel, then summarise.",
    "inputs": {
        "type": "object",
        "required": ["names"],
        "properties": {"names": {"type": "array", "items": {"type": "string"}}},
    },
    "steps": [
        {
            "id": "greet",
            "kind": "foreach",
            "items": "input.names",
            "max_concurrency": 5,
            "steps": [{"id": "hello", "kind": "set", "value": "Hello ${item}"}],
        },
        {"id": "count", "kind": "code", "code": "len(names)", "inputs": {"names": "${input.names}"}},
        {"id": "summary", "kind": "set", "value": {"greetings": "${steps.greet.output}", "n": "${steps.count.output}"}},
    ],
    "output": "${steps.summary.output}",
}


def render_catalog(catalog: Iterable[Mapping[str, Any]]) -> str:
    """One entry per tool: name, side effects, description, then its argument schema as JSON."""
    lines = []
    for tool in catalog:
        effects = " (side effects)" if tool.get("side_effects") else ""
        lines.append(f"- {tool['name']}{effects}: {' '.join(str(tool.get('description', '')).split())}")
        schema = json.dumps(tool.get("args_schema", {"type": "object"}), separators=(",", ":"), ensure_ascii=False)
        lines.append(f"  args schema: {schema}")
    return "\n".join(lines) if lines else "(no tools: use code, llm, set and the other step kinds)"


def system_prompt(catalog: Iterable[Mapping[str, Any]]) -> str:
    """The planner's system prompt for a tenant's tool catalog (``ToolRegistry.catalog()``)."""
    example = json.dumps(_EXAMPLE, indent=1, ensure_ascii=False)
    return (
        f"{_INTRO}\n\n## Plan format\n{format_summary()}\n\n## Expressions\n{_EXPRESSIONS}\n\n"
        f"## {_RULES}\n\n## Script steps\n{_SCRIPTS}\n\n## Tools you may use\n{render_catalog(catalog)}\n\n"
        f"## Example (format only: its steps use no tools)\n{example}"
    )


def goal_prompt(goal: str) -> str:
    return f"Goal:\n{goal.strip()}\n\nAnswer with the plan as one JSON object."


def revision_prompt(plan: Mapping[str, Any], request: str) -> str:
    """Ask for a revision of ``plan``: the whole revised plan back, unchanged parts kept as they are."""
    current = pretty(dict(plan))
    return (
        f"Current plan:\n{current}\n\nRevise it as requested below. Keep what the request does not change "
        f"(same step ids for steps that stay). Answer with the complete revised plan as one JSON object.\n\n"
        f"Request:\n{request.strip()}"
    )


def repair_prompt(issues: Sequence[PlanIssue]) -> str:
    """The validator's findings, one per line as ``pointer (step 'id'): message [code]``."""
    listed = "\n".join(f"- {issue}" for issue in issues)
    return (
        f"Your plan is not valid: {len(issues)} problem(s), each as JSON pointer (step id): message [code].\n"
        f"{listed}\n\nFix every problem and answer with the complete corrected plan as one JSON object."
    )
