"""Who may use an MCP server over HTTP: a holder of an API key of the tenant it serves.

Over stdio the agent that spawned the server is its only client. Over HTTP anyone who reaches the
port would act as the tenant, so every request carries ``Authorization: Bearer <api key>``, checked
against the tenant registry and required to belong to the served tenant. Development on a loopback
address may opt out explicitly (``--no-auth``); nothing else may.
"""

from __future__ import annotations

import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from executor.service.tenants import AuthenticationFailed, TenantRegistry

__all__ = ["McpAuthError", "TenantKeyAuth", "check_http_auth"]


class McpAuthError(ValueError):
    """The HTTP transport cannot be served as configured (no registry, or no auth off loopback)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_http_auth(host: str, registry: TenantRegistry | None, no_auth: bool) -> None:
    if no_auth and not _loopback(host):
        raise McpAuthError(f"--no-auth is for loopback development only, not --host {host}")
    if not no_auth and registry is None:
        raise McpAuthError(
            "MCP over HTTP needs API keys from the tenant registry (set DURAPLAN_TENANCY=1), "
            "or --no-auth on a loopback host for development"
        )


class TenantKeyAuth:
    """ASGI middleware: 401 unless the request's bearer key belongs to ``tenant``."""

    def __init__(self, app: ASGIApp, registry: TenantRegistry, tenant: str) -> None:
        self.app = app
        self.registry = registry
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode(errors="replace")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        try:
            if self.registry.authenticate(token).tenant_id != self.tenant:
                raise AuthenticationFailed()
        except AuthenticationFailed:
            body = json.dumps({"error": f"an API key of tenant {self.tenant!r} is required"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
