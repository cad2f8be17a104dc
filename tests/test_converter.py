"""The payload converter: UTF-8 JSON, and dataclasses encoded as temporalio's own converter would."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

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


@dataclasses.dataclass
class _Plain:
    """Fields the converter takes as JSON gives them, unless the value is not what the hint says."""

    text: str
    count: int
    ratio: float
    flag: bool
    blob: dict[str, Any]
    labels: dict[str, str]
    names: list[str]
    maybe: str | None = None
    anything: Any = None
    inner: _Inner | None = None
    inners: list[_Inner] = dataclasses.field(default_factory=list)


def test_plain_fields_decode_as_the_default_converter_does() -> None:
    good = {
        "text": "é",
        "count": 3,
        "ratio": 1.5,
        "flag": True,
        "blob": {"a": [1, {"b": None}]},
        "labels": {"k": "v"},
        "names": ["x", "y"],
        "maybe": None,
        "anything": {"z": 1},
    }
    ours, theirs = _decode_both(good, _Plain)
    assert ours == theirs and isinstance(ours, _Plain) and ours.blob == good["blob"]
    # values that need converting (the default converter's int(), float()) or that it refuses
    for field, value in [
        ("count", 2.0),
        ("count", True),
        ("ratio", 2),
        ("flag", 1),
        ("text", 5),
        ("maybe", "m"),
        ("maybe", 7),
        ("labels", {"k": 1}),
        ("names", ["x", 2]),
        ("names", "xy"),
        ("blob", ["not", "an", "object"]),
        ("inner", {"n": 1}),
        ("inner", {"n": "x"}),
        ("inner", 3),
        ("inners", [{"n": 1, "tags": ["t"]}]),
        ("inners", [1]),
        ("inners", "ab"),
    ]:
        ours, theirs = _decode_both({**good, field: value}, _Plain)
        assert ours == theirs, (field, value)
        if not isinstance(ours, tuple):
            assert type(getattr(ours, field)) is type(getattr(theirs, field)), (field, value)
