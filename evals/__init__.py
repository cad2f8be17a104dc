"""duraplan's eval harness: how well a model plans, and whether its plans run.

    from evals import EvalConfig, load_dataset, run_eval
    report = await run_eval(EvalConfig(load_dataset("evals/datasets/starter.yaml"), "authored", "replay"))

The CLI is ``duraplan eval``; see evals/README.md.
"""

from __future__ import annotations

from evals.dataset import Case, Dataset, DatasetInvalid, load_dataset
from evals.evaluators import CHECKS, Check, Outcome, critical_path, evaluate
from evals.recording import Recording, RecordingMissing
from evals.report import CaseResult, Report, compare, load_report
from evals.runner import EvalConfig, run_eval

__all__ = [
    "CHECKS",
    "Case",
    "CaseResult",
    "Check",
    "Dataset",
    "DatasetInvalid",
    "EvalConfig",
    "Outcome",
    "Recording",
    "RecordingMissing",
    "Report",
    "compare",
    "critical_path",
    "evaluate",
    "load_dataset",
    "load_report",
    "run_eval",
]
