"""duraplan's eval harness: how well a model plans, and whether its plans run.

    from evals import EvalConfig, load_dataset, run_eval
    report = await run_eval(EvalConfig(load_dataset("evals/datasets/starter.yaml"), "authored", "replay"))

The CLI is ``duraplan eval``; see evals/README.md.
"""

from __future__ import annotations

from evals.dataset import Case, Dataset, DatasetInvalid, World, load_dataset
from evals.evaluators import CHECKS, OUTCOME_CHECKS, Check, Outcome, WorldRun, critical_path, discriminating, evaluate
from evals.preflight import EvalNotConfigured
from evals.recording import Recording, RecordingMissing
from evals.report import CaseResult, Report, WorldResult, compare, load_report
from evals.runner import EvalConfig, run_eval
from evals.trace import TraceCall

__all__ = [
    "CHECKS",
    "OUTCOME_CHECKS",
    "Case",
    "CaseResult",
    "Check",
    "Dataset",
    "DatasetInvalid",
    "EvalConfig",
    "EvalNotConfigured",
    "Outcome",
    "Recording",
    "RecordingMissing",
    "Report",
    "TraceCall",
    "World",
    "WorldResult",
    "WorldRun",
    "compare",
    "critical_path",
    "discriminating",
    "evaluate",
    "load_dataset",
    "load_report",
    "run_eval",
]
