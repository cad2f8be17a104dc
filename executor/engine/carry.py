"""The continue-as-new carry, bounded: finished foreach items packed, a large carry kept out of history.

A run of 100,000 steps continues as new many times, and each execution hands the next one what
already ran (``Carry``) so nothing runs twice. Two things keep that hand-over within Temporal's
limits (2 MB per payload; the history's own size):

- **Packing** (pure): the finished items of a running foreach are one record each (``each[7]`` ->
  its output). They travel as one list of runs per loop (``Carry.items``: path -> ``[[first
  index, [outputs...]], ...]``) instead of a record per item, and are unpacked into per-item
  records when the next execution starts, so the engine itself sees no difference.
- **Offload**: a carry whose JSON is larger than ``RunInput.carry_limit`` has its records and
  compensations written to the worker's store by a local activity (``CARRY_SAVE``; its input never
  enters history) and the next execution's input holds a reference (``Carry.ref``) beside the
  small parts (events, event ids, pause state, counters). That execution reads it back in
  parts of at most ``CARRY_PART_BYTES`` (``CARRY_LOAD``; each part's text is in history as the
  local activity's result, far below the payload limit) before it runs anything.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Set as AbstractSet
from datetime import timedelta
from typing import Any

from temporalio import workflow

from executor.engine.base import EngineBase
from executor.engine.clock import now_iso
from executor.engine.contract import CARRY_DROP, CARRY_LOAD, CARRY_SAVE
from executor.engine.models import Carry, CompensationCall, EventRecord, StepRecord, record_from_json, record_to_json
from executor.engine.status import compact

__all__ = [
    "CARRY_PART_BYTES",
    "CarryLoad",
    "CarryMixin",
    "CarrySave",
    "decode_carry",
    "encode_carry",
    "pack_records",
    "split_text",
    "unpack_records",
]

CARRY_PART_BYTES = 256 * 1024  # characters per loaded part: each is one local-activity result in history
_PATCH_CARRY_OFFLOAD = "carry-offload"
_CARRY_TIMEOUT = timedelta(seconds=60)
# Most runs never get an event with an id: they share this, not an empty set each (216 bytes).
_NO_IDS: frozenset[str] = frozenset()


@dataclasses.dataclass
class CarrySave:
    """Store one execution's carry (JSON text) under ``key``; the worker splits it into parts."""

    tenant: str
    run_id: str
    key: str
    text: str
    keep: str | None = None  # the carry this execution was loaded from: kept until the next one loads
    part_chars: int = CARRY_PART_BYTES


@dataclasses.dataclass
class CarryLoad:
    """Read part ``part`` of a stored carry (``drop`` on the last part: delete it once read)."""

    tenant: str
    run_id: str
    key: str
    part: int


def pack_records(records: dict[str, StepRecord]) -> tuple[dict[str, dict[str, Any]], dict[str, list[list[Any]]]]:
    """(records, items): the compacted records, finished plain foreach items taken out as runs."""
    kept: dict[str, dict[str, Any]] = {}
    by_loop: dict[str, dict[int, Any]] = {}
    for key, rec in compact(records).items():
        if key.endswith("]") and _plain_item(rec):
            loop, _, digits = key[:-1].rpartition("[")
            if digits.isdigit():
                by_loop.setdefault(loop, {})[int(digits)] = rec.output
                continue
        kept[key] = record_to_json(rec)
    items: dict[str, list[list[Any]]] = {}
    for loop, outputs in by_loop.items():
        runs: list[list[Any]] = []
        for index in sorted(outputs):
            if runs and runs[-1][0] + len(runs[-1][1]) == index:
                runs[-1][1].append(outputs[index])
            else:
                runs.append([index, [outputs[index]]])
        items[loop] = runs
    return kept, items


def unpack_records(records: dict[str, dict[str, Any]], items: dict[str, list[list[Any]]]) -> dict[str, StepRecord]:
    out = {k: record_from_json(v) for k, v in records.items()}
    for loop, runs in items.items():
        for first, outputs in runs:
            for offset, output in enumerate(outputs):
                out[f"{loop}[{first + offset}]"] = StepRecord(state="completed", output=output)
    return out


def _plain_item(rec: StepRecord) -> bool:
    """A finished foreach item as ``_foreach_item`` records it: state and output, nothing else."""
    return (
        rec.state == "completed"
        and not rec.attempts
        and rec.started_at is None
        and rec.ended_at is None
        and rec.error is None
        and rec.detail is None
    )


def encode_carry(carry: Carry) -> str:
    # Not dataclasses.asdict: it deep-copies every record and output (seconds at 100,000 items,
    # past the workflow thread's 2 s deadlock limit); only events and compensations are dataclasses.
    data = {f.name: getattr(carry, f.name) for f in dataclasses.fields(carry)}
    data["events"] = [dataclasses.asdict(e) for e in carry.events]
    data["compensations"] = [dataclasses.asdict(c) for c in carry.compensations]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode_carry(text: str) -> Carry:
    data = json.loads(text)
    data["events"] = [EventRecord(**e) for e in data.get("events", [])]
    data["compensations"] = [CompensationCall(**c) for c in data.get("compensations", [])]
    return Carry(**data)


def split_text(text: str, part_chars: int) -> list[str]:
    return [text[i : i + part_chars] for i in range(0, len(text), part_chars)] or [""]


class CarryMixin(EngineBase):
    """Restores the carry at the start of an execution and builds the next one's."""

    seen_event_ids: list[str]
    _seen: AbstractSet[str]  # a set of its own once an event id arrives: _NO_IDS until then
    started_at: str
    continued: int

    def _restore(self, carry: Carry) -> None:
        self.records = unpack_records(carry.records, carry.items)
        self.events = carry.events
        self.seen_event_ids = carry.seen_event_ids
        self._seen = set(carry.seen_event_ids) if carry.seen_event_ids else _NO_IDS
        self.compensations = carry.compensations
        self.executed = carry.executed_steps
        self.paused = carry.paused
        self.started_at = carry.started_at or now_iso()
        self.continued = carry.continued
        self.state = "paused" if self.paused else "running"

    def _carry_owner(self) -> str:
        return f"{self.inp.run_id}#{self.inp.generation}"

    async def _load_carry(self) -> None:
        """Read an offloaded carry back (records, compensations) before anything runs. Events,
        event ids, pause state, counters and start time travel inline and were restored already."""
        stub = self.inp.carry
        if stub is None or stub.ref is None:
            return
        parts: list[str] = []
        for part in range(stub.parts):
            text: str = await workflow.execute_local_activity(
                CARRY_LOAD,
                CarryLoad(self.inp.tenant, self._carry_owner(), stub.ref, part),
                result_type=str,
                start_to_close_timeout=_CARRY_TIMEOUT,
            )
            parts.append(text)
        carry = decode_carry("".join(parts))
        self.records = unpack_records(carry.records, carry.items)
        self.compensations = carry.compensations

    async def _drop_carry(self) -> None:
        """The run is over: its stored carries are not needed any more."""
        stub = self.inp.carry
        if stub is not None and stub.ref is not None:
            await workflow.execute_local_activity(
                CARRY_DROP,
                CarryLoad(self.inp.tenant, self._carry_owner(), stub.ref, 0),
                result_type=int,
                start_to_close_timeout=_CARRY_TIMEOUT,
            )

    async def _next_carry(self) -> Carry:
        records, items = pack_records(self.records)
        carry = Carry(
            records=records,
            items=items,
            events=self.events,
            seen_event_ids=self.seen_event_ids,
            compensations=self.compensations,
            executed_steps=self.executed,
            paused=self.paused,
            started_at=self.started_at,
            continued=self.continued + 1,
        )
        text = encode_carry(carry)
        if len(text) <= self.inp.carry_limit or not self._since(_PATCH_CARRY_OFFLOAD):
            return carry
        key = str(carry.continued)
        keep = self.inp.carry.ref if self.inp.carry is not None else None
        stored = dataclasses.replace(carry, events=[], seen_event_ids=[])
        parts: int = await workflow.execute_local_activity(
            CARRY_SAVE,
            CarrySave(self.inp.tenant, self._carry_owner(), key, encode_carry(stored), keep),
            result_type=int,
            start_to_close_timeout=_CARRY_TIMEOUT,
        )
        # Built after the save: an event or a pause that arrived while it ran is in it (no step
        # runs while the run drains, so records and compensations cannot have changed).
        return Carry(
            events=self.events,
            seen_event_ids=self.seen_event_ids,
            executed_steps=self.executed,
            paused=self.paused,
            started_at=self.started_at,
            continued=carry.continued,
            ref=key,
            parts=parts,
        )
