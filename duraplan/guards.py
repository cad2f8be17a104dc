"""Request guards in front of the HTTP API: a body size limit, a JSON nesting limit, and JSON only.

Without them a 10 MB body reached Temporal and came back as gRPC RESOURCE_EXHAUSTED (answered
429 with ``Retry-After: 1``, so clients retried for ever), and JSON nested a few hundred deep broke
recursive code on the way (a 500 ``text/plain``). Both are the client's mistake: 413 and 422,
as problem details, before any handler runs. Python's JSON parser also takes ``NaN`` and
``Infinity``, which are not JSON: they went into history as such and came back as null; 422 too.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from executor.lang.depth import MAX_JSON_DEPTH, json_problem

__all__ = ["MAX_REQUEST_BYTES", "RequestGuard"]

# Every run's plan and inputs travel to Temporal in one payload of at most 2 MiB.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
PROBLEMS = "https://duraplan.dev/problems/"


class _TooLarge(Exception):
    pass


class RequestGuard:
    """ASGI middleware: refuses bodies over ``max_bytes`` (413), JSON deeper than ``max_depth`` and
    NaN or Infinity (422)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send, declared)
            return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await self._too_large(send, None)
            return
        problem = self._not_plain_json(body)
        if problem is not None:
            await _problem(send, 422, "validation", "Request invalid", problem, issues=[problem])
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _not_plain_json(self, body: bytes) -> dict[str, Any] | None:
        if not body:
            return None
        try:
            value = json.loads(body)
        except RecursionError:
            pointer = "/"
        except ValueError:
            return None  # not JSON: the handler's own validation answers (400)
        else:
            found = json_problem(value, self.max_depth)
            if found is None:
                return None
            pointer, code, message = found
            return {"pointer": pointer, "step": None, "code": code, "message": message}
        return {
            "pointer": pointer,
            "step": None,
            "code": "too_deep",
            "message": f"nested more than {self.max_depth} levels deep",
        }

    async def _too_large(self, send: Send, size: int | None) -> None:
        got = f"{size} bytes" if size is not None else "more"
        detail = f"request body is {got}; the limit is {self.max_bytes} bytes"
        await _problem(send, 413, "payload-too-large", "Request body too large", detail, limit=self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, then: Receive) -> Receive:
    """The body already read, once; after it, the connection's own messages (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return receive


async def _problem(send: Send, status: int, kind: str, title: str, detail: Any, **extra: Any) -> None:
    text = detail["message"] if isinstance(detail, dict) else str(detail)
    body = json.dumps({"type": PROBLEMS + kind, "title": title, "status": status, "detail": text, **extra}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
