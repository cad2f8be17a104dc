"""The code-step sandbox: pydantic-monty, a Python interpreter in Rust, in a pool of subprocesses.

Monty has no filesystem, network or environment access; limits on memory and time are enforced in
the worker process, and a parent-side deadline kills a worker that ignores them. Every step gets a
fresh session, and workers are recycled so no state survives between steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pydantic_monty

__all__ = ["Sandbox", "SandboxError", "SandboxLimits"]

_EXC_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt))\b")


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 64
    cpu_seconds: float = 5.0
    max_recursion: int = 200


class SandboxError(Exception):
    """A snippet failed. ``error_type`` is the sandboxed exception's name (or SandboxCrashed)."""

    def __init__(self, error_type: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


class Sandbox:
    def __init__(self, *, max_processes: int = 2, recycle_after: int = 50) -> None:
        self._pool = pydantic_monty.AsyncMonty(
            min_processes=1,
            max_processes=max_processes,
            max_checkouts_per_worker=recycle_after,
            checkout_timeout=60.0,
        )

    async def __aenter__(self) -> Sandbox:
        await self._pool.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._pool.__aexit__(et, e, tb)

    async def run(self, code: str, inputs: dict[str, Any], limits: SandboxLimits) -> Any:
        """Value of the snippet's last expression."""
        resource_limits: pydantic_monty.ResourceLimits = {
            "max_memory": limits.memory_mb * 1024 * 1024,
            "max_feed_duration_secs": limits.cpu_seconds,
            "max_recursion_depth": limits.max_recursion,
        }
        try:
            async with self._pool.checkout(script_name="step.py", limits=resource_limits) as session:
                return await session.feed_run(code, inputs=inputs)
        except pydantic_monty.MontySyntaxError as exc:
            raise SandboxError("SyntaxError", str(exc), retryable=False) from None
        except pydantic_monty.MontyCrashedError as exc:
            raise SandboxError("SandboxCrashed", f"sandbox worker crashed: {exc}", retryable=True) from None
        except pydantic_monty.MontyError as exc:
            text = str(exc)
            match = _EXC_NAME.match(text)
            raise SandboxError(match.group(1) if match else "CodeError", text, retryable=False) from None
