"""Writes evals/datasets/dataset.schema.json from the dataset model (``make schema``); a test checks drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.dataset import Dataset
from schemas.generate import json_schema_document

__all__ = ["SCHEMA_PATH", "dataset_schema", "render"]

SCHEMA_PATH = Path(__file__).parent / "datasets" / "dataset.schema.json"
SCHEMA_ID = "https://duraplan.dev/schemas/eval-dataset.schema.json"


def dataset_schema() -> dict[str, Any]:
    return json_schema_document(Dataset, SCHEMA_ID)


def render() -> str:
    return json.dumps(dataset_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
