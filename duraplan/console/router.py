"""Mounts the console's static files on the API app (one call from ``duraplan.api.create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CONSOLE_PATH", "STATIC_DIR", "mount_console"]

CONSOLE_PATH = "/ui"
STATIC_DIR = Path(__file__).parent / "static"

# Scripts and styles come only from the console itself (no inline script, no other origin), so text
# from a plan or a step's output that reached the page could not run as code even if mis-rendered.
# connect-src 'self': the pages talk to this API and nothing else.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Secured:
    """Adds ``SECURITY_HEADERS`` to every response of the wrapped ASGI app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))  # type: ignore[call-overload]
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)  # type: ignore[arg-type]


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/ui`` (the page) and ``/ui/static/*`` (scripts, styles, vendored libraries)."""
    index = STATIC_DIR / "index.html"

    @app.get(CONSOLE_PATH, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(CONSOLE_PATH + "/")

    @app.get(CONSOLE_PATH + "/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(index, headers=SECURITY_HEADERS)

    app.mount(CONSOLE_PATH + "/static", _Secured(StaticFiles(directory=STATIC_DIR)), name="console-static")
