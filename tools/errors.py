"""Errors a tool raises; the executor turns them into step failures at the activity boundary.

ToolError                 a tool call failed; ``retryable`` says whether another attempt may help
├── ToolArgumentsError    arguments broke the tool's schema (never retryable)
└── UnknownToolError      no tool of that name is registered (never retryable)

DatabaseUnavailable       (a ConnectionError) the store's PostgreSQL cannot be reached at start-up
"""

from __future__ import annotations

__all__ = ["DatabaseUnavailable", "ToolArgumentsError", "ToolError", "UnknownToolError"]


class ToolError(Exception):
    """A tool call failed. ``error_type`` is what plans list in ``retry.non_retryable``."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.error_type = error_type or type(self).__name__
        self.retry_after = retry_after


class ToolArgumentsError(ToolError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, error_type="ToolArgumentsError")


class UnknownToolError(ToolError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown tool {name!r}", retryable=False, error_type="UnknownToolError")


class DatabaseUnavailable(ConnectionError):
    """The database behind ``DURAPLAN_DATABASE_URL`` refused or did not answer; the message names
    it without its password. A ConnectionError, so callers that handle OSError handle it too."""
