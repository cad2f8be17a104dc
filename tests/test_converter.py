"""The payload converter: UTF-8 JSON, and dataclasses encoded as temporalio's own converter would."""

from __future__ import annotations

import dataclasses
import json

from temporalio.converter import DataConverter

from executor.engine.models import Carry, EventRecord, Revision, RunInput
from executor.service.converter import UTF8_DATA_CONVERTER


def _run_input() -> RunInput:
    return RunInput(
        plan={"name": "n", "steps": [{"id": "s", "kind": "set", "value": {"é": ["ü", 1.5, None]}}]},
        plan_hash="h",
        tenant="t",
        session="s",
        run_id="r",
        inputs={"x": [1, {"y": "ñ"}]},
        revisions=[Revision(revision=1, plan_hash="a", reason=None, at="2026-11-30T00:00:00+00:00")],
        carry=Carry(events=[EventRecord(type="go", payload={"ok": True}, event_id="e1", received_at="now")]),
    )


def test_nested_dataclasses_encode_as_the_default_converter_does() -> None:
    ours = UTF8_DATA_CONVERTER.payload_converter.to_payloads([_run_input()])[0].data
    theirs = DataConverter.default.payload_converter.to_payloads([_run_input()])[0].data
    assert json.loads(ours) == json.loads(theirs) == json.loads(json.dumps(dataclasses.asdict(_run_input())))
    assert "ñ".encode() in ours and b"\\u00f1" not in ours  # UTF-8, not escapes
    assert UTF8_DATA_CONVERTER.payload_converter.from_payloads(
        UTF8_DATA_CONVERTER.payload_converter.to_payloads([_run_input()]), [RunInput]
    ) == [_run_input()]
