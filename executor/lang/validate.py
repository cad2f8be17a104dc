"""Plan validation: every problem found at once, each with a JSON pointer and the step's id.

Two passes: the schema (the pydantic model that generates ``schemas/plan.schema.json``), then the
semantics a schema cannot express: unique ids, references that resolve and are visible, no cycles,
known tools with valid literal arguments, expressions that parse, limits. An invalid plan never
reaches Temporal.
"""

from __future__ import annotations

import ast
import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from executor.errors import PlanInvalid, PlanIssue
from executor.lang.depth import json_problem
from executor.lang.expressions import (
    ExpressionError,
    compile_expression,
    iter_expressions,
    references,
    strip_template,
)
from executor.lang.json_schema import schema_problem
from executor.lang.model_names import model_problem
from executor.lang.script import TOO_DEEP, LiteralCall, analyse
from schemas.plan import (
    CodeStep,
    Compensation,
    FailStep,
    ForeachStep,
    LlmStep,
    Plan,
    Retry,
    ScriptStep,
    SetStep,
    SleepStep,
    Step,
    SubplanStep,
    SwitchStep,
    ToolStep,
    WaitForEventStep,
    parse_duration,
)

if TYPE_CHECKING:
    from tools.registry import ToolRegistry

__all__ = ["MAX_DECLARED_STEPS", "MAX_NESTING", "all_steps", "check_plan", "step_references", "validate_plan"]

MAX_DECLARED_STEPS = 10_000
MAX_NESTING = 8
MAX_WAIT_SECONDS = 365 * 86400.0  # the reference product's longest sleep
MAX_STEP_TIMEOUT = 86400.0
STEP_KINDS = frozenset(
    {"tool", "llm", "code", "script", "sleep", "wait_for_event", "foreach", "switch", "subplan", "set", "fail"}
)


def validate_plan(
    plan: dict[str, Any] | Plan, *, tools: ToolRegistry | None = None, granted: Callable[[str], bool] | None = None
) -> Plan:
    """The parsed plan, or ``PlanInvalid`` listing every problem."""
    parsed, issues = check_plan(plan, tools=tools, granted=granted)
    if issues or parsed is None:
        raise PlanInvalid(issues)
    return parsed


def check_plan(
    plan: dict[str, Any] | Plan, *, tools: ToolRegistry | None = None, granted: Callable[[str], bool] | None = None
) -> tuple[Plan | None, list[PlanIssue]]:
    """``granted(tool_name)``: whether the submitting tenant may use a tool (checked again at dispatch)."""
    if isinstance(plan, Plan):
        parsed = plan
    else:
        if not isinstance(plan, dict):
            return None, [PlanIssue("", f"a plan is a JSON object, not {type(plan).__name__}", code="schema")]
        problem = json_problem(plan)
        if problem is not None:
            pointer, code, message = problem
            return None, [PlanIssue(pointer, message, code=code)]
        try:
            parsed = Plan.model_validate(plan)
        except ValidationError as exc:
            return None, _with_semantic_issues(plan, _schema_issues(exc, plan), tools, granted)
    checker = _Checker(tools, granted)
    checker.plan(parsed, "", depth=0)
    return parsed, checker.issues


# ---- schema errors ----------------------------------------------------------------------------


def _schema_issues(exc: ValidationError, raw: dict[str, Any]) -> list[PlanIssue]:
    """One issue per place: a union field (a duration is a string or a number) fails once per
    member, and the first member's message is the one a person can act on."""
    issues: dict[str, PlanIssue] = {}
    for err in exc.errors():
        loc = _real_path(raw, [p for i, p in enumerate(err["loc"]) if not _is_union_tag(err["loc"], i)])
        pointer = "".join(f"/{p}" for p in loc)
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch" and pointer.endswith(("duration", "timeout", "interval")):
            message = f"{err['input']!r} is not a duration (e.g. 30s, 5m, 1h30m, 2d, or a number of seconds)"
        issues.setdefault(pointer, PlanIssue(pointer, message, step=_step_at(raw, loc), code="schema"))
    return list(issues.values())


def _with_semantic_issues(
    raw: dict[str, Any],
    schema: list[PlanIssue],
    tools: ToolRegistry | None,
    granted: Callable[[str], bool] | None,
) -> list[PlanIssue]:
    """Schema issues plus the semantic ones (references, tools, cycles...) of the same plan with the
    schema-broken fields left out, so one round of repair can fix everything. When leaving them out
    does not give a plan (a required field is broken), the schema issues alone."""
    pruned = copy.deepcopy(raw)
    for issue in schema:
        _remove(pruned, [p for p in issue.pointer.split("/")[1:]])
    try:
        parsed = Plan.model_validate(pruned)
    except ValidationError:
        return schema
    checker = _Checker(tools, granted)
    checker.plan(parsed, "", depth=0)
    # Leaving a field out can itself break a rule at or above it (a sleep with no duration): those
    # are echoes of the schema issue, not problems of their own.
    pruned_at = [i.pointer for i in schema]
    return schema + [
        i for i in checker.issues if not any(p == i.pointer or p.startswith(i.pointer + "/") for p in pruned_at)
    ]


def _remove(node: Any, parts: list[str]) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, dict) and part in node:
            if last:
                del node[part]
                return
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node) and not last:
            node = node[int(part)]
        else:
            return


def _is_union_tag(loc: tuple[Any, ...], i: int) -> bool:
    # pydantic puts the discriminator value into the location: steps/0/tool/args -> steps/0/args
    return isinstance(loc[i], str) and loc[i] in STEP_KINDS and i > 0 and isinstance(loc[i - 1], int)


def _real_path(raw: Any, loc: list[Any]) -> list[Any]:
    """Drop pydantic's union-member labels (``str``, ``float``...) that are not keys of the plan."""
    out: list[Any] = []
    node = raw
    for i, part in enumerate(loc):
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif isinstance(node, dict) and i == len(loc) - 1:
            pass  # a missing required key: keep it in the pointer
        else:
            continue
        out.append(part)
    return out


def _step_at(raw: Any, loc: list[Any]) -> str | None:
    """The id of the innermost step on the path, if it has one."""
    found, node = None, raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str) and isinstance(part, int):
            found = node["id"]
    return found


# ---- references -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expr:
    pointer: str  # relative to the step
    expression: str
    bare: bool  # a bare expression field (when, items, ...), not a template
    inner: bool = False  # evaluated inside the step's own block (a foreach's per-item output)
    after: bool = False  # evaluated once the step completed (compensation): its own output is there


def _own_expressions(step: Step) -> Iterator[_Expr]:
    """Expressions in the step's own fields (not in nested steps, not in a subplan's plan)."""
    if step.when is not None:
        yield _Expr("/when", step.when, True)
    if step.compensate is not None:
        for expr in (
            *_templates(step.compensate.args, "/compensate/args"),
            *_templates(step.compensate.inputs, "/compensate/inputs"),
        ):
            yield _Expr(expr.pointer, expr.expression, expr.bare, after=True)
    match step:
        case ToolStep():
            yield from _templates(step.args, "/args")
        case LlmStep():
            yield from _templates(step.prompt, "/prompt")
            yield from _templates(step.system, "/system")
        case CodeStep() | ScriptStep():
            yield from _templates(step.inputs, "/inputs")
        case SleepStep():
            yield from _templates(step.until, "/until")
        case WaitForEventStep():
            pass
        case ForeachStep():
            yield _Expr("/items", step.items, True)
            if step.output is not None:
                yield _Expr("/output", step.output, True, inner=True)
        case SwitchStep():
            for i, case in enumerate(step.cases):
                yield _Expr(f"/cases/{i}/when", case.when, True)
        case SubplanStep():
            yield from _templates(step.inputs, "/inputs")
        case SetStep():
            yield from _templates(step.value, "/value")
        case FailStep():
            yield from _templates(step.message, "/message")


def _templates(value: Any, pointer: str) -> Iterator[_Expr]:
    for sub, expression in iter_expressions(value, pointer):
        yield _Expr(sub, expression, False)


def _nested_blocks(step: Step) -> Iterator[tuple[str, list[Step]]]:
    match step:
        case ForeachStep():
            yield "/steps", step.steps
        case SwitchStep():
            for i, case in enumerate(step.cases):
                yield f"/cases/{i}/steps", case.steps
            yield "/default", step.default
        case _:
            return


def step_references(step: Step) -> set[str]:
    """Ids this step must wait for: referenced as ``steps.<id>`` or in ``depends_on``, nested steps
    included (a container waits for whatever its insides need from outside)."""
    found = set(step.depends_on)
    for expr in _own_expressions(step):
        with contextlib.suppress(ExpressionError):  # reported by the validator
            found |= references(expr.expression)[1]
    for _, block in _nested_blocks(step):
        for nested in block:
            found |= step_references(nested)
    return found


# ---- the semantic checker ---------------------------------------------------------------------


class _Checker:
    def __init__(self, tools: ToolRegistry | None, granted: Callable[[str], bool] | None = None) -> None:
        self.tools = tools
        self.granted = granted
        self.issues: list[PlanIssue] = []
        self.ancestors: list[str] = []  # containers enclosing the step being checked

    def add(self, pointer: str, message: str, step: str | None, code: str) -> None:
        self.issues.append(PlanIssue(pointer, message, step=step, code=code))

    def plan(self, plan: Plan, base: str, depth: int) -> None:
        outer, self.ancestors = self.ancestors, []  # a subplan is a namespace of its own
        try:
            self._plan(plan, base, depth)
        finally:
            self.ancestors = outer

    def _plan(self, plan: Plan, base: str, depth: int) -> None:
        self._json_schema(plan.inputs, f"{base}/inputs", None)
        replan_model = plan.replan.model if plan.replan is not None else None
        if replan_model is not None and (problem := model_problem(replan_model)) is not None:
            self.add(f"{base}/replan/model", problem, None, "invalid_value")
        all_steps = list(_flatten(plan.steps, f"{base}/steps"))
        if len(all_steps) > MAX_DECLARED_STEPS:
            self.add(f"{base}/steps", f"{len(all_steps)} steps declared; at most {MAX_DECLARED_STEPS}", None, "limit")
        seen: dict[str, str] = {}
        for pointer, step in all_steps:
            if step.id in seen:
                self.add(
                    f"{pointer}/id",
                    f"duplicate step id {step.id!r} (first at {seen[step.id]})",
                    step.id,
                    "duplicate_id",
                )
            else:
                seen[step.id] = pointer
        self._durations(plan, base)
        self.block(plan.steps, f"{base}/steps", visible=set(), loop_depth=0, depth=depth, every=set(seen))
        for expr in _templates(plan.output, f"{base}/output"):
            self.expression(
                expr, None, visible={s.id for s in plan.steps}, in_loop=False, every=set(seen), pointer_base=""
            )

    def block(
        self, steps: list[Step], base: str, visible: set[str], loop_depth: int, depth: int, every: set[str]
    ) -> None:
        if depth > MAX_NESTING:
            self.add(base, f"steps nested deeper than {MAX_NESTING} levels", None, "limit")
            return
        here = visible | {s.id for s in steps}
        siblings = {s.id for s in steps}
        for i, step in enumerate(steps):
            self.step(step, f"{base}/{i}", here, siblings, loop_depth, depth, every)
        self._cycles(steps, base, siblings)

    def step(
        self, step: Step, ptr: str, visible: set[str], siblings: set[str], loop_depth: int, depth: int, every: set[str]
    ) -> None:
        for j, dep in enumerate(step.depends_on):
            if dep == step.id:
                self.add(f"{ptr}/depends_on/{j}", "a step cannot depend on itself", step.id, "cycle")
            elif dep in self.ancestors:
                self.add(
                    f"{ptr}/depends_on/{j}",
                    f"step {step.id!r} is inside {dep!r} and cannot depend on it",
                    step.id,
                    "cycle",
                )
            elif dep not in every:
                self.add(f"{ptr}/depends_on/{j}", f"unknown step {dep!r}", step.id, "unknown_reference")
            elif dep not in visible:
                self.add(
                    f"{ptr}/depends_on/{j}",
                    f"step {dep!r} is nested in another block and not visible here",
                    step.id,
                    "not_visible",
                )
        for expr in _own_expressions(step):
            if expr.inner and isinstance(step, ForeachStep):
                inside = visible | {s.id for s in step.steps}
                self.expression(expr, None, inside, True, every, ptr)
            else:
                self.expression(expr, step, visible, loop_depth > 0, every, ptr)
        self.activity_options(step, ptr)
        if step.timeout is not None and not isinstance(step, WaitForEventStep):
            self._seconds(step.timeout, f"{ptr}/timeout", step.id, MAX_STEP_TIMEOUT)
        if step.retry is not None:
            self.retry(step.retry, f"{ptr}/retry", step.id)
        if step.compensate is not None:
            self.compensation(step.compensate, f"{ptr}/compensate", step.id)
        self.kind(step, ptr, visible, loop_depth, depth, every)

    def retry(self, r: Retry, ptr: str, sid: str) -> None:
        """Intervals the workflow's timers can hold: a 1e300-second backoff passed, and overflowed
        converting the timer, failing every workflow task (the run hung, retrying nothing)."""
        seconds = []
        for name in ("initial_interval", "max_interval"):
            value = getattr(r, name)
            try:
                seconds.append(parse_duration(value))
            except ValueError as exc:
                self.add(f"{ptr}/{name}", str(exc), sid, "limit")
                continue
            if seconds[-1] > MAX_WAIT_SECONDS:
                days = MAX_WAIT_SECONDS / 86400
                self.add(f"{ptr}/{name}", f"duration {_shown(value)} exceeds the limit of {days:g} days", sid, "limit")
        if len(seconds) == 2 and seconds[0] > seconds[1]:
            self.add(ptr, "initial_interval is longer than max_interval", sid, "invalid_value")

    def activity_options(self, step: Step, ptr: str) -> None:
        """retry, timeout and execution shape one activity call: on other kinds they would do nothing,
        so saying them is an error rather than a silently dropped wish."""
        if isinstance(step, ToolStep | LlmStep | CodeStep | ScriptStep):
            return
        hints = {
            "retry": "retries apply to tool, llm, code and script steps; set retry on the steps inside",
            "timeout": "a time limit applies to tool, llm and code steps (and wait_for_event); "
            "give a subplan's plan limits.deadline instead",
            "execution": "execution applies to tool, llm, code and script steps",
        }
        given = step.model_fields_set
        for option, hint in hints.items():
            if option == "timeout" and isinstance(step, WaitForEventStep):
                continue
            if option in given and getattr(step, option) not in (None, "auto"):
                self.add(
                    f"{ptr}/{option}", f"{option} does nothing on a {step.kind} step: {hint}", step.id, "not_applicable"
                )

    def kind(self, step: Step, ptr: str, visible: set[str], loop_depth: int, depth: int, every: set[str]) -> None:
        match step:
            case ToolStep():
                self.tool_call(step.tool, step.args, ptr, step.id, "/tool", "/args")
            case LlmStep():
                if step.output_schema is not None:
                    self._json_schema(step.output_schema, f"{ptr}/output_schema", step.id)
                if step.model is not None and (problem := model_problem(step.model)) is not None:
                    self.add(f"{ptr}/model", problem, step.id, "invalid_value")
            case CodeStep():
                self.code(step.code, f"{ptr}/code", step.id)
                for name in step.inputs:
                    if not name.isidentifier():
                        self.add(
                            f"{ptr}/inputs/{name}",
                            f"input name {name!r} is not a Python identifier",
                            step.id,
                            "invalid_value",
                        )
            case ScriptStep():
                self.script(step, ptr)
            case SleepStep():
                if (step.duration is None) == (step.until is None):
                    self.add(ptr, "a sleep needs exactly one of duration or until", step.id, "invalid_value")
                elif step.duration is not None:
                    self._seconds(step.duration, f"{ptr}/duration", step.id, MAX_WAIT_SECONDS)
                elif step.until is not None and "${" not in step.until:
                    self._timestamp(step.until, f"{ptr}/until", step.id)
            case WaitForEventStep():
                if step.timeout is not None:
                    self._seconds(step.timeout, f"{ptr}/timeout", step.id, MAX_WAIT_SECONDS)
                if step.payload_schema is not None:
                    self._json_schema(step.payload_schema, f"{ptr}/payload_schema", step.id)
            case ForeachStep():
                self.ancestors.append(step.id)
                self.block(step.steps, f"{ptr}/steps", visible, loop_depth + 1, depth + 1, every)
                self.ancestors.pop()
            case SwitchStep():
                self.ancestors.append(step.id)
                for block_ptr, block in _nested_blocks(step):
                    self.block(block, f"{ptr}{block_ptr}", visible, loop_depth, depth + 1, every)
                self.ancestors.pop()
            case SubplanStep():
                if depth >= MAX_NESTING:
                    self.add(f"{ptr}/plan", f"subplans nested deeper than {MAX_NESTING} levels", step.id, "limit")
                else:
                    self.plan(step.plan, f"{ptr}/plan", depth + 1)
            case SetStep() | FailStep():
                pass

    def expression(
        self, expr: _Expr, step: Step | None, visible: set[str], in_loop: bool, every: set[str], pointer_base: str
    ) -> None:
        ptr = pointer_base + expr.pointer
        sid = step.id if step else None
        if expr.bare and "${" in expr.expression and not expr.expression.strip().startswith("${"):
            self.add(ptr, "expected a bare expression, not text with ${...} inside", sid, "expression")
            return
        try:
            compile_expression(strip_template(expr.expression))
            roots, refs = references(expr.expression)
        except ExpressionError as exc:
            self.add(ptr, str(exc), sid, "expression")
            return
        allowed = {"input", "steps", "run"} | ({"item", "index"} if in_loop else set())
        for root in sorted(roots - allowed):
            hint = " (item and index exist only inside a foreach)" if root in ("item", "index") else ""
            self.add(
                ptr,
                f"unknown name {root!r} in {expr.expression!r}; use input, steps, run{hint}",
                sid,
                "unknown_reference",
            )
        for ref in sorted(refs):
            if step is not None and ref == step.id:
                if not expr.after:
                    self.add(ptr, f"step {ref!r} references its own output", sid, "cycle")
            elif step is not None and ref in self.ancestors:
                self.add(ptr, f"step {sid!r} is inside {ref!r} and cannot use its output", sid, "cycle")
            elif ref not in every:
                self.add(ptr, f"unknown step {ref!r} in {expr.expression!r}", sid, "unknown_reference")
            elif ref not in visible:
                self.add(
                    ptr,
                    f"step {ref!r} is nested in another block and not visible here; reference its container",
                    sid,
                    "not_visible",
                )

    def tool_call(self, name: str, args: dict[str, Any], ptr: str, sid: str, tool_field: str, args_field: str) -> None:
        if self.tools is None:
            return
        if name not in self.tools:
            known = ", ".join(self.tools.names())
            self.add(f"{ptr}{tool_field}", f"unknown tool {name!r} (registered: {known})", sid, "unknown_tool")
            return
        if self.granted is not None and not self.granted(name):
            self.add(f"{ptr}{tool_field}", f"tool {name!r} is not granted to this tenant", sid, "tool_not_granted")
        for sub, message in self.tools.get(name).argument_errors(args):
            if _templated(args, sub):
                continue  # the template's value is checked again at dispatch
            self.add(f"{ptr}{args_field}{sub}", f"tool {name!r}: {message}", sid, "tool_args")

    def compensation(self, c: Compensation, ptr: str, sid: str) -> None:
        if (c.tool is None) == (c.code is None):
            self.add(ptr, "a compensation needs exactly one of tool or code", sid, "invalid_value")
        elif c.tool is not None:
            self.tool_call(c.tool, c.args, ptr, sid, "/tool", "/args")
        elif c.code is not None:
            self.code(c.code, f"{ptr}/code", sid)

    def code(self, source: str, ptr: str, sid: str) -> None:
        try:
            ast.parse(source)
        except SyntaxError as exc:
            self.add(ptr, f"Python syntax error at line {exc.lineno}: {exc.msg}", sid, "code_syntax")
        except (RecursionError, MemoryError):  # CPython's parser on 1+1+1... or ----1 thousands deep
            self.add(ptr, f"Python syntax error: {TOO_DEEP}", sid, "code_syntax")

    def script(self, step: ScriptStep, ptr: str) -> None:
        """Syntax, unknown functions, literal host-call arguments, tools and their grants."""
        info = analyse(step.code)
        for line, message in info.problems:
            code = "code_syntax" if message.startswith("Python syntax error") else "script"
            self.add(f"{ptr}/code", f"line {line}: {message}", step.id, code)
        for name in step.inputs:
            if not name.isidentifier():
                message = f"input name {name!r} is not a Python identifier"
                self.add(f"{ptr}/inputs/{name}", message, step.id, "invalid_value")
        for call in info.calls:
            self._script_call(call, f"{ptr}/code", step.id)

    def _script_call(self, call: LiteralCall, ptr: str, sid: str) -> None:
        before = len(self.issues)
        match call.function:
            case "tool" | "compensate" if isinstance(call.first, str):
                self.tool_call(call.first, call.args, ptr, sid, "", "")
                if call.dynamic:  # with computed arguments only errors inside a literal one are certain
                    self.issues[before:] = [
                        i
                        for i in self.issues[before:]
                        if i.code != "tool_args" or any(i.pointer.startswith(f"{ptr}/{k}") for k in call.args)
                    ]
            case "sleep" if call.first is not None:
                self._literal_duration(call.first, ptr, sid, "sleep()")
            case "wait_for_event" if "timeout" in call.args:
                self._literal_duration(call.args["timeout"], ptr, sid, "wait_for_event()")
            case "sleep_until" if isinstance(call.first, str):
                self._timestamp(call.first, ptr, sid)
            case "llm" if isinstance(call.args.get("output_schema"), dict) or isinstance(call.args.get("model"), str):
                if isinstance(call.args.get("output_schema"), dict):
                    self._json_schema(call.args["output_schema"], ptr, sid)
                if isinstance(call.args.get("model"), str) and (problem := model_problem(call.args["model"])):
                    self.add(ptr, problem, sid, "invalid_value")
            case _:
                return
        # The pointer cannot point into the source: the message names the line.
        self.issues[before:] = [
            PlanIssue(ptr, f"line {call.line}: {i.message}", step=sid, code=i.code) for i in self.issues[before:]
        ]

    def _literal_duration(self, value: Any, ptr: str, sid: str, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.add(ptr, f"{where}: a duration is a string like 30s or a number of seconds", sid, "invalid_value")
            return
        try:
            parse_duration(value)
        except ValueError as exc:
            self.add(ptr, f"{where}: {exc}", sid, "invalid_value")
            return
        before = len(self.issues)
        self._seconds(value, ptr, sid, MAX_WAIT_SECONDS)
        self.issues[before:] = [
            PlanIssue(i.pointer, f"{where}: {i.message}", step=i.step, code=i.code) for i in self.issues[before:]
        ]

    def _cycles(self, steps: list[Step], base: str, siblings: set[str]) -> None:
        deps = {s.id: (step_references(s) & siblings) - {s.id} for s in steps}
        index = {s.id: i for i, s in enumerate(steps)}
        state: dict[str, int] = {}  # 1 visiting, 2 done
        for start in deps:
            stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(deps[start])))]
            if state.get(start):
                continue
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    path = [n for n, _ in stack]
                    cycle = [*path[path.index(nxt) :], nxt]
                    self.add(f"{base}/{index[nxt]}", "dependency cycle: " + " -> ".join(cycle), nxt, "cycle")
                    for n, _ in stack:  # report each independent cycle once, then move on
                        state[n] = 2
                    break
                elif not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, iter(sorted(deps[nxt]))))

    def _durations(self, plan: Plan, base: str) -> None:
        if plan.limits.deadline is not None:
            self._seconds(plan.limits.deadline, f"{base}/limits/deadline", None, MAX_WAIT_SECONDS)

    def _seconds(self, value: str | float, ptr: str, sid: str | None, maximum: float) -> None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:  # the schema's pattern admits "999...9s", more than a float holds
            self.add(ptr, str(exc), sid, "limit")
            return
        if seconds <= 0:
            self.add(ptr, f"duration {_shown(value)} must be positive", sid, "invalid_value")
        elif seconds > maximum:
            self.add(ptr, f"duration {_shown(value)} exceeds the limit of {maximum / 86400:g} days", sid, "limit")

    def _timestamp(self, value: str, ptr: str, sid: str) -> None:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.add(ptr, f"{value!r} is not an ISO-8601 timestamp", sid, "invalid_value")
            return
        if parsed.tzinfo is None:
            self.add(ptr, f"timestamp {value!r} needs a timezone (e.g. Z or +00:00)", sid, "invalid_value")

    def _json_schema(self, schema: dict[str, Any], ptr: str, sid: str | None) -> None:
        problem = schema_problem(schema)
        if problem is not None:
            where, message = problem
            self.add(ptr + where, f"not a valid JSON Schema: {message}", sid, "invalid_schema")


def all_steps(steps: list[Step]) -> Iterator[Step]:
    """Every step, nested ones (foreach, switch) included; not the steps of subplans."""
    return (step for _, step in _flatten(steps, ""))


def _flatten(steps: list[Step], base: str) -> Iterator[tuple[str, Step]]:
    for i, step in enumerate(steps):
        yield f"{base}/{i}", step
        for block_ptr, block in _nested_blocks(step):
            yield from _flatten(block, f"{base}/{i}{block_ptr}")


def _templated(args: Any, pointer: str) -> bool:
    """Whether the value at ``pointer`` inside ``args`` is a template or a secret reference (its
    value is known only later)."""
    node = args
    for part in [p for p in pointer.split("/") if p]:
        if isinstance(node, dict):
            node = node.get(part.replace("~1", "/").replace("~0", "~"))
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    if isinstance(node, dict) and set(node) == {"$secret"}:
        return True  # resolved inside the activity, checked against the tool's schema there
    return isinstance(node, str) and "${" in node


def _shown(value: str | float) -> str:
    """A duration in a message: hundreds of digits pass the schema's pattern; not echoed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."
