"""Writes schemas/plan.schema.json from the pydantic model (``make schema``); a test checks drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.plan import Plan

__all__ = ["SCHEMA_ID", "SCHEMA_PATH", "json_schema_document", "plan_schema", "render"]

SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")
SCHEMA_ID = "https://duraplan.dev/schemas/plan.schema.json"


def json_schema_document(model: type[BaseModel], schema_id: str) -> dict[str, Any]:
    """A model's JSON Schema as a standalone 2020-12 document with its ``$id``."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, **schema}


def plan_schema() -> dict[str, Any]:
    return json_schema_document(Plan, SCHEMA_ID)


def render() -> str:
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
