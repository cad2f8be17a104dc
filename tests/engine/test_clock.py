"""The workflow clock's ISO text: what ``workflow.now().isoformat()`` says, worked out once per time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from executor.engine import clock


class _Clock:
    """The two ``temporalio.workflow`` calls ``now_iso`` makes, on a settable time."""

    def __init__(self) -> None:
        self.ns = 0
        self.conversions = 0

    def time_ns(self) -> int:
        return self.ns

    def now(self) -> datetime:
        self.conversions += 1
        return datetime.fromtimestamp(self.ns / 1e9, UTC)


def test_now_iso_is_the_workflow_time_and_converts_once_per_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Clock()
    monkeypatch.setattr(clock, "workflow", fake)
    fake.ns = 1_764_565_200_123_456_000
    first = clock.now_iso()
    assert first == datetime.fromtimestamp(fake.ns / 1e9, UTC).isoformat() == "2025-12-01T05:00:00.123456+00:00"
    assert clock.now_iso() == first and fake.conversions == 1  # same activation, same time: no conversion
    fake.ns += 1_000_000  # the next activation
    assert clock.now_iso() == "2025-12-01T05:00:00.124456+00:00" and fake.conversions == 2
    fake.ns = 1_764_565_200_000_000_000  # whole seconds: isoformat drops the fraction, as before
    assert clock.now_iso() == "2025-12-01T05:00:00+00:00"
