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


@dataclasses.dataclass
class _Inner:
    n: int
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Outer:
    name: str
    inner: _Inner | None
    many: dict[str, _Inner]
    derived: int = dataclasses.field(init=False, default=0)


def _decode_both(value: object, hint: type) -> tuple[object, object]:
    """Decode ``value`` (as JSON) to ``hint`` with ours and with temporalio's default converter."""
    payload = DataConverter.default.payload_converter.to_payloads([value])[0]
    results: list[object] = []
    for converter in (UTF8_DATA_CONVERTER.payload_converter, DataConverter.default.payload_converter):
        try:
            results.append(converter.from_payloads([payload], [hint])[0])
        except Exception as exc:  # the same failure, the same message
            results.append((type(exc), str(exc), str(exc.__cause__)))
    return results[0], results[1]


def test_dataclasses_decode_as_the_default_converter_does() -> None:
    outer = _Outer("o", _Inner(1, ["a"]), {"k": _Inner(2)})
    object.__setattr__(outer, "derived", 7)  # an init=False field travels too
    ours, theirs = _decode_both(outer, _Outer)
    assert ours == theirs == outer and isinstance(ours, _Outer) and ours.derived == 7
    assert isinstance(ours.many["k"], _Inner)
    assert _decode_both(_run_input(), RunInput) == (_run_input(), _run_input())
    # bad input fails the same way: a wrong field type, a missing required field, not a dict
    bads: list[object] = [{"name": "o", "inner": {"n": "x"}, "many": {}}, {"inner": None, "many": {}}, ["a", "list"]]
    for bad in bads:
        ours, theirs = _decode_both(bad, _Outer)
        assert isinstance(ours, tuple) and ours == theirs
