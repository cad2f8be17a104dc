"""MCP sources: list a server's tools and call them, over streamable HTTP or stdio.

A ``McpConnection`` holds one initialized ``ClientSession`` open in a background task (the SDK's
transports are context managers bound to the task that entered them) and serves calls from any
task. Over HTTP the endpoint is vetted by the tenant's ``HttpPolicy`` once per connection and
every TCP connection goes to the vetted addresses only (``_PinnedBackend``), like ``http.request``.

Error mapping (``ToolError.error_type``, retryable or not):

- ``McpToolError``: the tool answered ``isError``. Not retryable, unless the result's ``_meta``
  says ``"retryable": true`` (a server's way to say "try again").
- ``McpProtocolError``: a JSON-RPC error. Invalid params / unknown method / invalid request are
  not retryable; other codes (internal error...) are.
- ``McpConnectError`` / ``McpTimeout``: the server could not be reached or did not answer in
  time; retryable (the call carries its idempotency key, so the server can dedupe a repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore2
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tools.egress import EgressTarget, HttpPolicy
from tools.errors import ToolError
from tools.redaction import clip
from tools.sources.catalog import Catalog, CatalogTool, SourceError, SourceSpec, unique_tools

__all__ = ["IDEMPOTENCY_META_KEY", "McpConnection", "listed_catalog", "mcp_catalog"]

# Where the idempotency key travels in the request's ``_meta`` (stable across retries of a step).
IDEMPOTENCY_META_KEY = "idempotency_key"
_NOT_RETRYABLE_CODES = frozenset({-32600, -32601, -32602})
# One HTTP answer of a server (the SDK reads a JSON answer whole, with no limit of its own; an SSE
# event it caps at 1 MiB): a tool result is at most 1 MiB once recorded, a catalog 500 tools of 64 KiB.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class _ResponseTooLarge(httpx2.StreamError):
    """A server's answer ran over ``MAX_RESPONSE_BYTES`` (the SDK reports it as a JSON-RPC parse error)."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise _ResponseTooLarge(f"the MCP server's answer is larger than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """Bounds what one answer of a tenant's server can make a worker hold in memory: JSON answers
    are cut at ``MAX_RESPONSE_BYTES`` as they arrive, and nothing is decompressed (the client asks
    for ``identity``; a gzip bomb the server sends anyway stays compressed, and fails to parse)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int = MAX_RESPONSE_BYTES) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        if "content-encoding" in response.headers:
            del response.headers["content-encoding"]
        if not response.headers.get("content-type", "").lower().startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            response.stream = _CappedStream(response.stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Connect only to the vetted host and port, at the addresses vetted for them."""

    def __init__(self, target: EgressTarget) -> None:
        self._inner = httpcore2.AnyIOBackend()
        self._target = target

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        wanted = self._target.url.raw_host.decode("ascii").lower().rstrip(".")
        if (host.lower().rstrip("."), port) != (wanted, self._target.port):
            raise SourceError(f"egress denied: connection to {host}:{port} was not vetted", error_type="EgressDenied")
        if not self._target.addresses:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        failure: Exception | None = None
        for ip in self._target.addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise SourceError("egress denied: unix sockets are not allowed", error_type="EgressDenied")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pinned_client(target: EgressTarget, headers: dict[str, str], timeout_s: float) -> httpx2.AsyncClient:
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(trust_env=False), network_backend=_PinnedBackend(target)
    )
    return httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(timeout_s, read=300.0),
        transport=_CappedTransport(transport),
        trust_env=False,
    )


class McpConnection:
    """One open MCP session; ``close()`` ends it. Calls may come from any task."""

    def __init__(self, spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None) -> None:
        self.spec = spec
        self._headers = headers
        self._policy = policy
        self._session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self._session is not None

    async def open(self) -> McpConnection:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready), name=f"mcp-source-{self.spec.name}")
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({self._task, waiter}, timeout=self.spec.timeout_s, return_when="FIRST_COMPLETED")
        waiter.cancel()
        if self._session is None:
            await self.close()
            raise self._connect_error(None if done else TimeoutError("no answer to initialize"))
        return self

    async def _run(self, ready: asyncio.Event) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.spec.kind == "mcp_stdio":
                    command, *args = self.spec.command
                    params = StdioServerParameters(command=command, args=list(args))
                    read, write = await stack.enter_async_context(stdio_client(params, errlog=sys.stderr))
                else:
                    assert self.spec.url is not None
                    policy = self._policy or HttpPolicy()
                    target = await policy.check(self.spec.url)
                    client = await stack.enter_async_context(_pinned_client(target, self._headers, self.spec.timeout_s))
                    read, write = await stack.enter_async_context(
                        streamable_http_client(self.spec.url, http_client=client)
                    )
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self._session = session
                ready.set()
                await self._stop.wait()
        except BaseException as exc:  # kept for open()'s message; the pool drops a dead connection
            self._failure = exc
        finally:
            self._session = None

    def _connect_error(self, cause: BaseException | None) -> SourceError:
        failure = cause or self._failure
        if isinstance(failure, ToolError):  # the egress policy refused the endpoint
            return SourceError(failure.message, retryable=failure.retryable, error_type=failure.error_type)
        detail = _describe(failure)
        return SourceError(
            f"MCP source {self.spec.name!r} is unreachable: {detail}", retryable=True, error_type="McpConnectError"
        )

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            if not self._task.done():
                self._task.cancel()

    async def list_tools(self) -> list[Any]:
        session = self._require()
        tools: list[Any] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(params={"cursor": cursor} if cursor else None)  # type: ignore[arg-type]
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or len(tools) > 2000:
                return tools

    async def call(self, tool: CatalogTool, args: dict[str, Any], idempotency_key: str, timeout_s: float) -> Any:
        session = self._require()
        meta: Any = {IDEMPOTENCY_META_KEY: idempotency_key}
        try:
            result = await asyncio.wait_for(
                session.call_tool(tool.remote, args, read_timeout_seconds=timeout_s, meta=meta), timeout_s
            )
        except TimeoutError:
            raise SourceError(
                f"MCP tool {tool.remote!r} did not answer in {timeout_s:g}s", retryable=True, error_type="McpTimeout"
            ) from None
        except MCPError as exc:
            code = exc.error.code
            raise SourceError(
                f"MCP tool {tool.remote!r}: protocol error {code}: {exc.error.message}",
                retryable=code not in _NOT_RETRYABLE_CODES,
                error_type="McpProtocolError",
            ) from None
        except (OSError, httpx2.HTTPError, httpcore2.NetworkError, RuntimeError) as exc:
            raise self._connect_error(exc) from None
        return _result_value(tool, result)

    def _require(self) -> ClientSession:
        if self._session is None:
            raise self._connect_error(None)
        return self._session


def _describe(failure: BaseException | None) -> str:
    while isinstance(failure, BaseExceptionGroup) and failure.exceptions:
        failure = failure.exceptions[0]
    if failure is None:
        return "the connection closed"
    text = str(failure).splitlines()[0] if str(failure) else ""
    return clip(f"{type(failure).__name__}: {text}", 300)


def _result_value(tool: CatalogTool, result: Any) -> Any:
    texts = [c.text for c in getattr(result, "content", []) if getattr(c, "type", None) == "text"]
    if getattr(result, "is_error", False):
        meta = getattr(result, "meta", None) or {}
        retryable = bool(meta.get("retryable")) if isinstance(meta, dict) else False
        message = clip(" ".join(texts), 2000) or "the tool reported an error"
        raise SourceError(f"MCP tool {tool.remote!r} failed: {message}", retryable=retryable, error_type="McpToolError")
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return structured
    if len(texts) == 1:
        return {"text": texts[0]}
    return {"content": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content]}


def _side_effects(annotations: dict[str, Any]) -> bool:
    """MCP's defaults are pessimistic (not read-only, destructive): only readOnlyHint clears it."""
    return annotations.get("readOnlyHint") is not True


async def mcp_catalog(spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None, now: float) -> Catalog:
    """The tools the server lists now, as catalog entries under ``spec.name``."""
    connection = await McpConnection(spec, headers, policy).open()
    try:
        return await listed_catalog(connection, now)
    finally:
        await connection.close()


async def listed_catalog(connection: McpConnection, now: float) -> Catalog:
    """The catalog of an open connection's server."""
    spec = connection.spec
    try:
        listed = await asyncio.wait_for(connection.list_tools(), spec.timeout_s)
    except TimeoutError:
        raise SourceError(
            f"MCP source {spec.name!r}: tools/list timed out", retryable=True, error_type="McpTimeout"
        ) from None
    except MCPError as exc:
        raise SourceError(
            f"MCP source {spec.name!r}: tools/list failed: {exc.error.message}", error_type="McpProtocolError"
        ) from None

    def builder(t: Any) -> Any:
        annotations = t.annotations.model_dump(mode="json", by_alias=True, exclude_none=True) if t.annotations else {}
        return lambda: CatalogTool.build(
            spec.name,
            t.name,
            (t.description or t.name).strip()[:4000],
            dict(t.input_schema),
            side_effects=_side_effects(annotations),
            annotations=annotations,
        )

    tools, skipped = unique_tools(spec.name, ((t.name, builder(t)) for t in listed))
    return Catalog(spec.name, tools, now, skipped)
