"""Eval reports: per-case results, a summary, JSON and Markdown files, a terminal table, and a
side-by-side comparison of two reports (two models, or two planner versions).

Everything in a report is a function of the dataset, the model's answers and the engine, except
``timings`` and ``started_at``: ``Report.comparable()`` drops those, so a replay can be checked
against the report it should reproduce.

Rates: a check's rate counts the cases where it applied; an outcome check (``OUTCOME_CHECKS``)
also leaves out the cases where a plan that does nothing would pass it (``counted: false``), so a
do-nothing plan scores 0 on every outcome rate. Token and cost figures from authored recordings
were written by hand: the report flags them (``figures: authored``) wherever it shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from evals.evaluators import CHECKS
from evals.trace import TraceCall

__all__ = [
    "CaseResult",
    "CheckResult",
    "Report",
    "WorldResult",
    "compare",
    "compare_markdown",
    "load_report",
    "print_compare",
]

REPORT_VERSION = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckResult(_Model):
    name: str
    status: str
    detail: str = ""
    # False: a plan that does nothing passes this check on this case; not in the check's rate.
    counted: bool = True


class WorldResult(_Model):
    """The plan's run in one world of the case, with every tool call it made."""

    name: str
    run_state: str | None = None
    run_output: Any = None
    run_error: str | None = None
    trace: list[TraceCall] = Field(default_factory=list)


class CaseResult(_Model):
    id: str
    category: str
    goal: str
    checks: list[CheckResult]
    plan: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    planning_error: str | None = None
    run_state: str | None = None
    run_output: Any = None
    run_error: str | None = None
    step_count: int | None = None
    critical_path: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model_latency_ms: float = 0.0
    prompt_drift: int = 0
    # Recorded answers with no prompt hash: whether their prompts drifted cannot be told.
    prompt_unhashed: int = 0
    # The tokens, cost and latency above come from an authored recording: written, not measured.
    authored: bool = False
    judge_score: float | None = None
    worlds: list[WorldResult] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)

    def status(self, check: str) -> str:
        return next((c.status for c in self.checks if c.name == check), "skip")

    def counted(self, check: str) -> bool:
        return next((c.counted for c in self.checks if c.name == check), False)

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


class Report(_Model):
    version: int = REPORT_VERSION
    dataset: str
    model: str
    mode: str
    planner_prompt_sha256: str
    started_at: str
    cases: list[CaseResult]
    timings: dict[str, float] = Field(default_factory=dict)

    # ---- summary ------------------------------------------------------------------------------

    def rate(self, check: str) -> tuple[int, int]:
        """(passed, of) for one check: cases where it applied (not skipped) and could discriminate."""
        statuses = [c.status(check) for c in self.cases if c.counted(check)]
        applicable = [s for s in statuses if s != "skip"]
        return sum(s == "pass" for s in applicable), len(applicable)

    def excluded(self, check: str) -> int:
        """Cases where the check applied but a do-nothing plan would pass it: not in its rate."""
        return sum(c.status(check) != "skip" and not c.counted(check) for c in self.cases)

    @property
    def figures(self) -> str:
        """Where the token, cost and latency figures come from: measured, authored or mixed."""
        authored = {c.authored for c in self.cases}
        return "mixed" if len(authored) > 1 else "authored" if authored == {True} else "measured"

    def summary(self) -> dict[str, Any]:
        rounds = [len(c.attempts) for c in self.cases if c.plan is not None]
        return {
            "cases": len(self.cases),
            "passed": sum(c.passed for c in self.cases),
            "checks": {
                name: {**dict(zip(("passed", "of"), self.rate(name), strict=True)), "excluded": self.excluded(name)}
                for name in CHECKS
            },
            "mean_rounds": round(sum(rounds) / len(rounds), 3) if rounds else None,
            "prompt_drift": sum(c.prompt_drift for c in self.cases),
            "prompt_unhashed": sum(c.prompt_unhashed for c in self.cases),
            "figures": self.figures,
            "prompt_tokens": sum(c.prompt_tokens for c in self.cases),
            "completion_tokens": sum(c.completion_tokens for c in self.cases),
            "cost_usd": round(sum(c.cost_usd for c in self.cases), 6),
            "by_category": {
                cat: {
                    "cases": sum(c.category == cat for c in self.cases),
                    "passed": sum(c.passed for c in self.cases if c.category == cat),
                }
                for cat in sorted({c.category for c in self.cases})
            },
        }

    def comparable(self) -> dict[str, Any]:
        """The report without wall-clock fields: equal for two replays of one recording."""
        data = self.model_dump(mode="json", exclude={"started_at", "timings"})
        for case in data["cases"]:
            case.pop("timings", None)
            for world in case.get("worlds", []):
                # Steps that run in parallel reach their tools in either order: compare calls as a
                # set per step (the checks that judge order only order calls the plan orders).
                for call in world["trace"]:
                    call.pop("seq")
                world["trace"].sort(key=lambda c: (c["step"], c["attempt"], json.dumps(c, sort_keys=True)))
        return data

    # ---- output -------------------------------------------------------------------------------

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["summary"] = self.summary()
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        json_path.write_text(self.to_json(), encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path

    def to_markdown(self) -> str:
        s = self.summary()
        lines = [
            f"# Eval report: {self.dataset} with {self.model} ({self.mode})",
            "",
            f"- started {self.started_at}; {s['cases']} cases, {s['passed']} passed every check",
            f"- planner prompt sha256 {self.planner_prompt_sha256[:12]}",
            f"- tokens {s['prompt_tokens']} prompt + {s['completion_tokens']} completion; cost ${s['cost_usd']:.6f}"
            + _FIGURES_NOTE[self.figures],
            f"- mean planning rounds (valid plans): {s['mean_rounds']}",
            f"- prompt drift: {s['prompt_drift']} answer(s) recorded for other prompts"
            + (f"; {s['prompt_unhashed']} with no prompt hash" if s["prompt_unhashed"] else ""),
            "",
            "| check | passed | of | rate | not counted |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in CHECKS:
            passed, of = self.rate(name)
            lines.append(f"| {name} | {passed} | {of} | {_pct(passed, of)} | {self.excluded(name) or ''} |")
        lines += [
            "",
            "Not counted: cases where the check applied, but a plan that does nothing would pass it "
            "(an outcome check that cannot tell work from no work). See evals/README.md.",
        ]
        lines += ["", "| category | cases | passed every check |", "|---|---:|---:|"]
        for category, counts in s["by_category"].items():
            lines.append(f"| {category} | {counts['cases']} | {counts['passed']} |")
        lines += ["", "## Cases", "", "| case | category | " + " | ".join(CHECKS) + " |"]
        lines.append("|---|---|" + "---|" * len(CHECKS))
        for case in self.cases:
            marks = " | ".join(_mark(case, name) for name in CHECKS)
            lines.append(f"| {case.id} | {case.category} | {marks} |")
        lines += ["", "\\* not counted in the check's rate: a plan that does nothing passes it on this case too."]
        lines += ["", "## Details", ""]
        for case in self.cases:
            lines += [f"### {case.id} ({case.category})", "", f"Goal: {case.goal}", ""]
            for check in case.checks:
                if check.status != "skip" or check.detail:
                    lines.append(f"- {_MARK[check.status]} {check.name}: {_escape(check.detail)}")
            lines.append(
                f"- rounds {len(case.attempts)}, tokens {case.prompt_tokens}+{case.completion_tokens}, "
                f"cost ${case.cost_usd:.6f}"
                + (" (authored, not measured)" if case.authored else "")
                + ", timings "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in case.timings.items())
            )
            for attempt in case.attempts:
                for issue in attempt.get("issues", [])[:5]:
                    lines.append(f"  - attempt {attempt['number']}: {_escape(issue.get('message', ''))}")
            if case.planning_error:
                lines.append(f"- planning error: {_escape(case.planning_error)}")
            for world in case.worlds:
                where = f"world {world.name}: " if len(case.worlds) > 1 else ""
                calls = ", ".join(_call(c) for c in world.trace[:12]) or "none"
                lines.append(f"- {where}run {world.run_state}; calls: {_escape(calls)}")
                if world.run_error:
                    lines.append(f"  - error: {_escape(world.run_error)}")
            if not case.worlds and case.run_error:
                lines.append(f"- run: {case.run_state}: {_escape(case.run_error)}")
            if case.plan is not None:
                lines += ["", "<details><summary>plan</summary>", "", "```json"]
                lines += [json.dumps(case.plan, indent=2, ensure_ascii=False), "```", "", "</details>"]
            lines.append("")
        return "\n".join(lines)

    def print_summary(self, console: Console) -> None:
        table = Table(title=f"{self.dataset} · {self.model} · {self.mode}")
        table.add_column("case")
        table.add_column("category")
        for name in CHECKS:
            table.add_column(_SHORT[name], justify="center")
        table.add_column("rounds", justify="right")
        authored = self.figures != "measured"
        table.add_column("tokens*" if authored else "tokens", justify="right")
        for case in self.cases:
            table.add_row(
                case.id,
                case.category,
                *(_RICH[case.status(name)] for name in CHECKS),
                str(len(case.attempts)),
                str(case.prompt_tokens + case.completion_tokens),
            )
        table.add_section()
        table.add_row(
            "pass rate",
            f"{sum(c.passed for c in self.cases)}/{len(self.cases)} all",
            *(_pct(*self.rate(name)) for name in CHECKS),
            str(self.summary()["mean_rounds"]),
            str(sum(c.prompt_tokens + c.completion_tokens for c in self.cases)),
        )
        console.print(table)
        summary = self.summary()
        console.print(
            "checks: "
            + ", ".join(f"{_SHORT[n]}={n}" for n in CHECKS)
            + f"; cost ${summary['cost_usd']:.6f}"
            + _FIGURES_NOTE[self.figures]
        )
        if authored:
            console.print("* tokens and cost of authored recordings are written by hand, not measured")
        excluded = {n: self.excluded(n) for n in CHECKS if self.excluded(n)}
        if excluded:
            console.print(
                "not counted (a do-nothing plan passes them): " + ", ".join(f"{n} {k}" for n, k in excluded.items())
            )
        if summary["prompt_drift"]:
            console.print(
                f"[yellow]prompt drift:[/] {summary['prompt_drift']} recorded answer(s) were given to other "
                "prompts than today's planner sends; re-record to measure this planner"
            )


_FIGURES_NOTE = {
    "measured": "",
    "authored": " (authored figures: written by hand, not measured)",
    "mixed": " (includes authored figures: written by hand, not measured)",
}
_MARK = {"pass": "✅", "fail": "❌", "skip": "·"}
_RICH = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "skip": "[dim]·[/]"}
_SHORT = {
    "valid_first_try": "1st",
    "valid_after_repair": "rep",
    "granted_tools": "grant",
    "step_budget": "budget",
    "runs_green": "green",
    "output": "out",
    "effects": "effect",
    "safety": "safe",
    "coverage": "cover",
    "parallelism": "par",
    "judge": "judge",
}


def _mark(case: CaseResult, check: str) -> str:
    status = case.status(check)
    return _MARK[status] + ("\\*" if status != "skip" and not case.counted(check) else "")


def _call(call: TraceCall) -> str:
    mark = "" if call.ok else " ✗"
    return f"{call.tool}({json.dumps(call.args, sort_keys=True, ensure_ascii=False)[:80]}){mark}"


def _pct(passed: int, of: int) -> str:
    return f"{100 * passed / of:.0f}%" if of else "-"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def load_report(path: str | Path) -> Report:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data.pop("summary", None)
    return Report.model_validate(data)


# ---- comparison -------------------------------------------------------------------------------


def compare(a: Report, b: Report) -> dict[str, Any]:
    """Pass rates side by side, and the cases whose checks differ."""
    rates = {name: {"a": a.rate(name), "b": b.rate(name)} for name in CHECKS}
    a_cases = {c.id: c for c in a.cases}
    changed = []
    for case in b.cases:
        before = a_cases.get(case.id)
        if before is None:
            continue
        diffs = {
            name: (before.status(name), case.status(name))
            for name in CHECKS
            if before.status(name) != case.status(name)
        }
        if diffs:
            changed.append({"case": case.id, "changes": diffs})
    sa, sb = a.summary(), b.summary()
    return {
        "a": {
            "model": a.model,
            "mode": a.mode,
            "planner": a.planner_prompt_sha256[:12],
            "dataset": a.dataset,
            "figures": a.figures,
        },
        "b": {
            "model": b.model,
            "mode": b.mode,
            "planner": b.planner_prompt_sha256[:12],
            "dataset": b.dataset,
            "figures": b.figures,
        },
        "rates": rates,
        "totals": {
            key: {"a": sa[key], "b": sb[key]}
            for key in ("cases", "passed", "mean_rounds", "prompt_tokens", "completion_tokens", "cost_usd")
        },
        "only_in_a": sorted(set(a_cases) - {c.id for c in b.cases}),
        "only_in_b": sorted({c.id for c in b.cases} - set(a_cases)),
        "changed": changed,
    }


def _label(side: dict[str, Any]) -> str:
    figures = ", authored figures" if side.get("figures", "measured") != "measured" else ""
    return f"{side['model']} ({side['mode']}, planner {side['planner']}{figures})"


def compare_markdown(diff: dict[str, Any]) -> str:
    lines = [
        f"# Comparison: A = {_label(diff['a'])}, B = {_label(diff['b'])}",
        "",
        "| check | A | B | change |",
        "|---|---:|---:|---:|",
    ]
    for name, r in diff["rates"].items():
        (pa, na), (pb, nb) = r["a"], r["b"]
        lines.append(f"| {name} | {pa}/{na} {_pct(pa, na)} | {pb}/{nb} {_pct(pb, nb)} | {_delta(pa, na, pb, nb)} |")
    for key, t in diff["totals"].items():
        lines.append(f"| {key} | {t['a']} | {t['b']} | |")
    if diff["changed"]:
        lines += ["", "| case | check | A | B |", "|---|---|---|---|"]
        for row in diff["changed"]:
            for name, (before, after) in row["changes"].items():
                lines.append(f"| {row['case']} | {name} | {before} | {after} |")
    for side in ("only_in_a", "only_in_b"):
        if diff[side]:
            lines.append(f"\n{side.replace('_', ' ')}: {', '.join(diff[side])}")
    return "\n".join(lines) + "\n"


def _delta(pa: int, na: int, pb: int, nb: int) -> str:
    if not na or not nb:
        return ""
    points = 100 * (pb / nb - pa / na)
    return f"{points:+.0f} pts" if points else "="


def print_compare(diff: dict[str, Any], console: Console) -> None:
    table = Table(title=f"A = {_label(diff['a'])}  vs  B = {_label(diff['b'])}")
    for column in ("check", "A", "B", "change"):
        table.add_column(column, justify="left" if column == "check" else "right")
    for name, r in diff["rates"].items():
        (pa, na), (pb, nb) = r["a"], r["b"]
        table.add_row(name, f"{pa}/{na} {_pct(pa, na)}", f"{pb}/{nb} {_pct(pb, nb)}", _delta(pa, na, pb, nb))
    table.add_section()
    for key, t in diff["totals"].items():
        table.add_row(key, str(t["a"]), str(t["b"]), "")
    console.print(table)
    for row in diff["changed"]:
        changes = ", ".join(f"{n}: {a} → {b}" for n, (a, b) in row["changes"].items())
        console.print(f"  {row['case']}: {changes}")
