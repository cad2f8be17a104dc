"""``Allow`` for OPTIONS and 405 answers, from the routes that really serve a path.

Starlette answers with the methods of the first route whose path *pattern* matches, and
``/v1/runs/{run_id}`` matches ``/v1/runs/x:cancel`` (a path parameter is any segment), so OPTIONS on
an action said ``Allow: GET``. A parameter here is a name (``NAME_REGEX``: no ``:``), so a route
counts only when every parameter it would capture is a valid name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowOptions", "allowed_methods"]


def allowed_methods(routes: Iterable[Any], path: str, name_regex: str) -> list[str]:
    name = re.compile(name_regex)
    methods: set[str] = set()
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        match = route.path_regex.match(path)
        if match is None or not all(name.fullmatch(str(v)) for v in match.groupdict().values()):
            continue
        methods |= set(route.methods or ())
    if methods:
        methods |= {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
    return sorted(methods)


class AllowOptions:
    """ASGI middleware answering OPTIONS with 204 and the path's ``Allow`` (no authentication: it
    says nothing about any run); 404 for a path no route serves."""

    def __init__(self, app: ASGIApp, name_regex: str) -> None:
        self.app = app
        self.name_regex = name_regex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = allowed_methods(scope["app"].routes, scope["path"], self.name_regex)
        if not methods:
            await self.app(scope, receive, send)  # the app's own 404
            return
        headers = [(b"allow", ", ".join(methods).encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
