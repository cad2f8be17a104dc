"""The built-in tools: HTTP, JMESPath transforms, tenant key-value state, notifications, and
debug tools for testing retries and timeouts.

Each tool is one handler function plus a strict argument schema; the registry validates
arguments before a handler runs, so handlers only apply defaults and domain checks.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jmespath
import jmespath.exceptions

from tools.egress import HttpPolicy, PinnedTransport, redact_url
from tools.errors import ToolArgumentsError, ToolError
from tools.registry import Tool, ToolContext

__all__ = ["HttpPolicy", "builtin_tools"]

MIB = 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 1 * MIB
MAX_KV_VALUE_BYTES = 1 * MIB
MAX_RETRY_AFTER_S = 24 * 3600.0
# A webhook's reply is only checked for its status; don't buffer much of it.
WEBHOOK_MAX_BYTES = 64 * 1024
# Only codings we can decode with a bound on the output (see _BoundedDecoder).
ACCEPT_ENCODING = "gzip, deflate"

_NO_BODY_METHODS = frozenset({"GET", "HEAD"})
# Framing headers are the client's job; letting a plan set them invites request smuggling.
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_MISSING = object()


def builtin_tools(http_policy: HttpPolicy | None = None, *, include_debug: bool = True) -> list[Tool]:
    """All built-in tools; HTTP-making tools (``http.request``, ``notify``) obey ``http_policy``.

    ``include_debug=False`` leaves out the ``debug.*`` tools, which exist for tests and
    diagnostics.
    """
    policy = http_policy if http_policy is not None else HttpPolicy()
    tools = [
        _http_request_tool(policy),
        _transform_tool(),
        *_kv_tools(),
        _notify_tool(policy),
    ]
    if include_debug:
        tools.extend(_debug_tools())
    return tools


# -- schema helpers ------------------------------------------------------------------------------


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


def _any(description: str) -> dict[str, Any]:
    return {"description": description}


_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 512,
    "description": "Key, scoped to the tenant.",
}


# -- http.request --------------------------------------------------------------------------------

_SCALAR = {"type": ["string", "number", "boolean"]}

HTTP_REQUEST_SCHEMA = _obj(
    {
        "method": {
            "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
            "default": "GET",
            "description": "HTTP method.",
        },
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 8192,
            "description": "Absolute http(s) URL. Private and loopback addresses are refused.",
        },
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 8192},
            "description": "Request headers. Host, Content-Length, Transfer-Encoding and "
            "Connection are set by the client and may not be given.",
        },
        "params": {
            "type": "object",
            "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
            "description": "Query parameters, added to any already in the URL.",
        },
        "json": _any("JSON request body. Exclusive with 'body'."),
        "body": {
            "type": "string",
            "description": "Raw request body (UTF-8). Exclusive with 'json'.",
        },
        "timeout_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 300,
            "default": DEFAULT_TIMEOUT_S,
            "description": "Deadline for the whole exchange, redirects included, in seconds.",
        },
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10 * MIB,
            "default": DEFAULT_MAX_BYTES,
            "description": "Largest response body accepted, counted both as received and after decompression.",
        },
    },
    required=("url",),
    **{"not": {"required": ["json", "body"]}},
)


def _http_request_tool(policy: HttpPolicy) -> Tool:
    async def http_request(args: dict[str, Any], ctx: ToolContext) -> Any:
        method = args.get("method", "GET")
        headers = _request_headers(args.get("headers", {}), method, ctx.idempotency_key)
        response = await _fetch(
            ctx.http_policy or policy,
            method,
            args["url"],
            headers=headers,
            params=args.get("params"),
            json_body=args.get("json", _MISSING),
            body=args.get("body"),
            timeout_s=float(args.get("timeout_s", DEFAULT_TIMEOUT_S)),
            max_bytes=int(args.get("max_bytes", DEFAULT_MAX_BYTES)),
        )
        _raise_for_status(response, ok_below=400)
        return response.as_result()

    return Tool(
        name="http.request",
        description="Make an HTTP request and return status, headers and the body (parsed if "
        "JSON). 429 and 5xx responses fail retryably, other 4xx fail permanently. Non-GET "
        "requests carry an Idempotency-Key header that is stable across retries of the step.",
        args_schema=HTTP_REQUEST_SCHEMA,
        handler=http_request,
        side_effects=True,
        local=False,
    )


def _request_headers(given: Mapping[str, str], method: str, idempotency_key: str) -> dict[str, str]:
    bad = sorted(h for h in given if h.lower() in _FORBIDDEN_HEADERS)
    if bad:
        raise ToolArgumentsError(f"tool 'http.request' may not set headers: {', '.join(bad)}")
    headers = dict(given)
    if method not in _NO_BODY_METHODS:
        # Ours wins over a plan-supplied one: only ours is stable across retries of the step.
        headers = {k: v for k, v in headers.items() if k.lower() != "idempotency-key"}
        headers["Idempotency-Key"] = idempotency_key
    return headers


@dataclass(frozen=True)
class _Fetched:
    method: str
    url: httpx.URL
    status: int
    headers: httpx.Headers
    encoding: str
    body: bytes

    def as_result(self) -> dict[str, Any]:
        parsed, text = None, None
        if _is_json(self.headers.get("content-type", "")) and self.body:
            try:
                parsed = json.loads(self.body)
            except ValueError:
                text = self.text()  # says JSON but isn't: give the caller the raw text
        else:
            text = self.text()
        return {"status": self.status, "headers": dict(self.headers), "json": parsed, "text": text}

    def text(self) -> str:
        try:
            return self.body.decode(self.encoding, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


async def _fetch(
    policy: HttpPolicy,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    params: Any = None,
    json_body: Any = _MISSING,
    body: str | None = None,
    timeout_s: float,
    max_bytes: int,
) -> _Fetched:
    """One request, redirects followed by hand so the policy vets (and pins) every hop."""
    transport = PinnedTransport(network_backend=policy.network_backend)
    try:
        policy.precheck(url)  # as given: httpx would make "file:///x" relative, say
        async with asyncio.timeout(timeout_s), _client(transport, timeout_s) as client:
            request = client.build_request(
                method,
                url,
                headers=headers,
                params=params,
                json=None if json_body is _MISSING else json_body,
                content=body.encode() if body is not None else None,
            )
            for _hop in range(policy.max_redirects + 1):
                # Resolve once, vet every address, connect to those addresses only.
                transport.pin(await policy.check(request.url))
                response = await client.send(request, stream=True)
                try:
                    follow = _next_request(response) if policy.follow_redirects else None
                    if follow is None:
                        return _Fetched(
                            method=request.method,
                            url=request.url,
                            status=response.status_code,
                            headers=response.headers,
                            encoding=response.encoding or "utf-8",
                            # HEAD: Content-Length describes a body that never comes.
                            body=b"" if request.method == "HEAD" else await _read_capped(response, max_bytes),
                        )
                finally:
                    await response.aclose()
                request = follow
            raise ToolError(
                f"more than {policy.max_redirects} redirects, last to {redact_url(request.url)}",
                retryable=False,
                error_type="HttpTooManyRedirects",
            )
    except ToolError:
        raise
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ToolError(f"{method} timed out after {timeout_s}s", retryable=True, error_type="HttpTimeout") from exc
    except httpx.ConnectError as exc:
        raise ToolError(f"{method} could not connect: {exc}", retryable=True, error_type="HttpConnectError") from exc
    except httpx.UnsupportedProtocol as exc:
        raise ToolError(str(exc), retryable=False, error_type="EgressDenied") from exc
    except httpx.InvalidURL as exc:
        raise ToolArgumentsError(f"invalid URL: {exc}") from exc
    except httpx.RemoteProtocolError as exc:
        if "location header" in str(exc).lower():  # httpx builds the redirect as it receives it
            raise ToolError(
                f"redirect has an unusable Location: {exc}", retryable=False, error_type="HttpBadRedirect"
            ) from exc
        raise ToolError(
            f"{method} failed: {type(exc).__name__}: {exc}", retryable=True, error_type="HttpTransportError"
        ) from exc
    except httpx.LocalProtocolError as exc:
        # The request itself is malformed (a header value with CR/LF, say): the same bytes fail again.
        raise ToolError(
            f"{method} request is malformed: {exc}", retryable=False, error_type="HttpRequestInvalid"
        ) from exc
    except httpx.TransportError as exc:
        # Connection dropped mid-exchange, protocol errors: plausibly transient.
        raise ToolError(
            f"{method} failed: {type(exc).__name__}: {exc}",
            retryable=True,
            error_type="HttpTransportError",
        ) from exc
    except httpx.HTTPError as exc:
        # e.g. a body that cannot be decompressed: the same bytes will fail again.
        raise ToolError(
            f"{method} failed: {type(exc).__name__}: {exc}", retryable=False, error_type="HttpError"
        ) from exc


def _next_request(response: httpx.Response) -> httpx.Request | None:
    """The redirect to follow, if any; a Location that does not parse fails for good."""
    try:
        return response.next_request
    except (httpx.RemoteProtocolError, httpx.InvalidURL) as exc:
        raise ToolError(
            f"redirect from {redact_url(response.request.url)} has an unusable Location: {exc}",
            retryable=False,
            error_type="HttpBadRedirect",
        ) from exc


def _client(transport: PinnedTransport, timeout_s: float) -> httpx.AsyncClient:
    # trust_env=False: an ambient HTTP(S)_PROXY would route around the egress checks, and
    # .netrc credentials must not be attached to plan-chosen URLs.
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


class _TooLarge(Exception):
    pass


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, refusing more than max_bytes as received or as decoded.

    Reading stops at the first network chunk that takes the received bytes past the cap, and
    decompression never produces more than max_bytes + 1 bytes, so a small compressed body that
    inflates hugely (a decompression bomb) costs no more memory than the cap.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(response, max_bytes)
    decoder = _BoundedDecoder(response.headers.get_list("content-encoding", split_commas=True), max_bytes)
    received = 0
    body = bytearray()
    try:
        # aiter_raw: the bytes as sent (transfer framing removed, content coding not).
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > max_bytes:
                raise _TooLarge
            body += decoder.feed(chunk)
        body += decoder.flush()
    except _TooLarge:
        raise _too_large(response, max_bytes) from None
    return bytes(body)


class _Inflate:
    """One gzip or deflate layer whose output is bounded per call."""

    def __init__(self, coding: str) -> None:
        self._deflate = coding == "deflate"
        # "deflate" should be zlib-wrapped, but some servers send raw deflate: try, then fall back.
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16)
        self._started = False

    def decompress(self, data: bytes, limit: int) -> bytes:
        """Inflate ``data``, producing at most ``limit + 1`` bytes (more than limit: too large)."""
        out = bytearray()
        while data:
            try:
                # max_length bounds the output; what it leaves unread waits in unconsumed_tail.
                out += self._zlib.decompress(data, limit - len(out) + 1)
            except zlib.error as exc:
                if self._deflate and not self._started:
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._started = True
                    continue
                raise httpx.DecodingError(f"invalid compressed body: {exc}") from exc
            self._started = True
            if len(out) > limit:
                break
            data = self._zlib.unconsumed_tail
        return bytes(out)

    def flush(self) -> bytes:
        try:
            return self._zlib.flush()
        except zlib.error as exc:
            raise httpx.DecodingError(f"invalid compressed body: {exc}") from exc


class _BoundedDecoder:
    """Undo the response's Content-Encoding with every layer's output capped at ``limit``.

    gzip and deflate are decoded (that is all we accept); identity and codings we cannot decode
    are passed through as they are, as httpx itself does.
    """

    def __init__(self, codings: list[str], limit: int) -> None:
        # Codings are listed in the order they were applied: undo the last first.
        names = [c.strip().lower() for c in reversed(codings)]
        self._layers = [_Inflate(n) for n in names if n in ("gzip", "x-gzip", "deflate")]
        self._produced = [0] * len(self._layers)
        self._limit = limit

    def feed(self, data: bytes) -> bytes:
        for i, layer in enumerate(self._layers):
            data = self._count(i, layer.decompress(data, self._limit - self._produced[i]))
        return data

    def flush(self) -> bytes:
        data = b""
        for i, layer in enumerate(self._layers):
            data = self._count(i, layer.decompress(data, self._limit - self._produced[i]))
            data += self._count(i, layer.flush())
        return data

    def _count(self, layer: int, data: bytes) -> bytes:
        self._produced[layer] += len(data)
        if self._produced[layer] > self._limit:
            raise _TooLarge
        return data


def _too_large(response: httpx.Response, max_bytes: int) -> ToolError:
    return ToolError(
        f"response from {response.request.method} {redact_url(response.request.url)} exceeds max_bytes={max_bytes}",
        retryable=False,
        error_type="HttpResponseTooLarge",
    )


def _raise_for_status(response: _Fetched, *, ok_below: int) -> None:
    """Raise for a status at or above ``ok_below``: retryable for 429 and 5xx, else permanent."""
    code = response.status
    if code < ok_below:
        return
    snippet = response.text()[:300]
    message = f"HTTP {code} from {response.method} {redact_url(response.url)}: {snippet}"
    retryable = code == 429 or code >= 500
    raise ToolError(
        message,
        retryable=retryable,
        error_type=f"HttpStatus{code}",
        retry_after=_retry_after(response.headers.get("retry-after")) if retryable else None,
    )


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP-date is left to the retry policy's own backoff.
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:  # None, NaN, inf, negative
        return None
    return min(seconds, MAX_RETRY_AFTER_S)  # the workflow clamps it further, to max_interval


# -- transform -----------------------------------------------------------------------------------


def _transform_tool() -> Tool:
    async def transform(args: dict[str, Any], ctx: ToolContext) -> Any:
        try:
            compiled = jmespath.compile(args["expression"])
        except jmespath.exceptions.JMESPathError as exc:
            raise ToolArgumentsError(f"invalid JMESPath expression: {exc}") from exc
        try:
            return compiled.search(args["data"])
        except jmespath.exceptions.JMESPathError as exc:
            # Valid expression, but it does not fit this data (e.g. a function on a wrong type).
            raise ToolError(f"transform failed: {exc}", error_type="TransformError") from exc

    return Tool(
        name="transform",
        description="Reshape JSON data with a JMESPath expression; returns the result "
        "(null when nothing matches). Pure: no side effects.",
        args_schema=_obj(
            {
                "data": _any("The JSON value to query."),
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 4096,
                    "description": 'JMESPath expression, e.g. "items[?price > `10`].name".',
                },
            },
            required=("data", "expression"),
        ),
        handler=transform,
        accepts_secrets=False,
    )


# -- kv.* ----------------------------------------------------------------------------------------


async def _kv_get(args: dict[str, Any], ctx: ToolContext) -> Any:
    value = await ctx.store.kv_get(ctx.tenant, args["key"], default=_MISSING)
    found = value is not _MISSING
    return {"key": args["key"], "found": found, "value": value if found else None}


async def _kv_put(args: dict[str, Any], ctx: ToolContext) -> Any:
    size = len(json.dumps(args["value"], ensure_ascii=False).encode())
    if size > MAX_KV_VALUE_BYTES:
        raise ToolError(
            f"value is {size} bytes; kv values are limited to {MAX_KV_VALUE_BYTES}",
            error_type="KvValueTooLarge",
        )
    await ctx.store.kv_put(ctx.tenant, args["key"], args["value"], idempotency_key=ctx.idempotency_key)
    return {"key": args["key"]}


async def _kv_delete(args: dict[str, Any], ctx: ToolContext) -> Any:
    deleted = await ctx.store.kv_delete(ctx.tenant, args["key"], idempotency_key=ctx.idempotency_key)
    return {"key": args["key"], "deleted": deleted}


async def _kv_list(args: dict[str, Any], ctx: ToolContext) -> Any:
    keys = await ctx.store.kv_list(ctx.tenant, args.get("prefix", ""), limit=int(args.get("limit", 1000)))
    return {"keys": keys}


async def _kv_incr(args: dict[str, Any], ctx: ToolContext) -> Any:
    try:
        value = await ctx.store.kv_incr(
            ctx.tenant, args["key"], int(args.get("by", 1)), idempotency_key=ctx.idempotency_key
        )
    except TypeError as exc:
        raise ToolError(str(exc), error_type="KvNotAnInteger") from exc
    return {"key": args["key"], "value": value}


def _kv_tools() -> list[Tool]:
    # Writes pass the step's idempotency key: a retried step does not write (or count) twice.
    return [
        Tool(
            name="kv.get",
            description="Read a value from the tenant's key-value store. Returns "
            "{key, found, value}; value is null when not found.",
            args_schema=_obj({"key": _KEY}, required=("key",)),
            handler=_kv_get,
            accepts_secrets=False,
        ),
        Tool(
            name="kv.put",
            description="Store a JSON value under a key (overwrites). Exactly once per step.",
            args_schema=_obj(
                {"key": _KEY, "value": _any("Any JSON value, up to 1 MiB serialized.")},
                required=("key", "value"),
            ),
            handler=_kv_put,
            accepts_secrets=False,
            side_effects=True,
        ),
        Tool(
            name="kv.delete",
            description="Delete a key. Returns {key, deleted}. Exactly once per step.",
            args_schema=_obj({"key": _KEY}, required=("key",)),
            handler=_kv_delete,
            accepts_secrets=False,
            side_effects=True,
        ),
        Tool(
            name="kv.list",
            description="List the tenant's keys that start with a prefix, sorted. Returns {keys}.",
            args_schema=_obj(
                {
                    "prefix": {
                        "type": "string",
                        "maxLength": 512,
                        "default": "",
                        "description": "Key prefix; empty lists all keys.",
                    },
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 10000,
                        "default": 1000,
                        "description": "Most keys returned.",
                    },
                }
            ),
            handler=_kv_list,
            accepts_secrets=False,
        ),
        Tool(
            name="kv.incr",
            description="Add to an integer counter (a missing key counts as 0) and return "
            "{key, value} with the new value. Exactly once per step.",
            args_schema=_obj(
                {
                    "key": _KEY,
                    "by": {
                        "type": "integer",
                        "default": 1,
                        "description": "Amount to add; may be negative.",
                    },
                },
                required=("key",),
            ),
            handler=_kv_incr,
            accepts_secrets=False,
            side_effects=True,
        ),
    ]


# -- notify --------------------------------------------------------------------------------------


def _notify_tool(policy: HttpPolicy) -> Tool:
    async def notify(args: dict[str, Any], ctx: ToolContext) -> Any:
        entry = await ctx.store.outbox_add(ctx.tenant, ctx.idempotency_key, args["channel"], args["message"])
        delivered = entry["delivered_at"] is not None
        webhook_url = args.get("webhook_url")
        if webhook_url is not None and not delivered:
            # Post what the outbox holds (the first attempt's message), so every delivery
            # attempt for this key sends the same payload. If two attempts race, the receiver
            # dedupes on the Idempotency-Key header.
            payload = {
                "channel": entry["channel"],
                "message": entry["message"],
                "idempotency_key": ctx.idempotency_key,
            }
            response = await _fetch(
                ctx.http_policy or policy,
                "POST",
                webhook_url,
                headers={"Idempotency-Key": ctx.idempotency_key},
                json_body=payload,
                timeout_s=DEFAULT_TIMEOUT_S,
                max_bytes=WEBHOOK_MAX_BYTES,
            )
            _raise_for_status(response, ok_below=300)
            await ctx.store.outbox_mark_delivered(ctx.tenant, ctx.idempotency_key)
            delivered = True
        return {
            "id": ctx.idempotency_key,
            "channel": entry["channel"],
            "delivered": delivered,
            "duplicate": entry["duplicate"],
        }

    return Tool(
        name="notify",
        description="Send a notification once per step: it is recorded in the tenant's outbox "
        "and, if webhook_url is given, POSTed there as {channel, message, idempotency_key} "
        "with an Idempotency-Key header. Retries never send a second notification; a failed "
        "webhook delivery is retried. Returns {id, channel, delivered, duplicate}.",
        args_schema=_obj(
            {
                "channel": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "Where the message goes, e.g. 'ops' or 'email:team'.",
                },
                "message": {
                    "type": ["string", "object"],
                    "description": "Text, or a JSON object for structured messages.",
                },
                "webhook_url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 8192,
                    "description": "Optional http(s) URL to POST the message to.",
                },
            },
            required=("channel", "message"),
        ),
        handler=notify,
        side_effects=True,
        local=False,  # may make a network call of up to 30 s
    )


# -- debug.* -------------------------------------------------------------------------------------


async def _debug_echo(args: dict[str, Any], ctx: ToolContext) -> Any:
    return dict(args)


async def _debug_sleep(args: dict[str, Any], ctx: ToolContext) -> Any:
    seconds = args["seconds"]
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def _debug_flaky(args: dict[str, Any], ctx: ToolContext) -> Any:
    fail_times = int(args["fail_times"])
    if ctx.attempt <= fail_times:
        raise ToolError(
            f"debug.flaky failing attempt {ctx.attempt} of {fail_times}",
            retryable=args.get("retryable", True),
            error_type=args.get("error_type", "DebugFlaky"),
        )
    return {"attempt": ctx.attempt, "value": args.get("value")}


async def _debug_fail(args: dict[str, Any], ctx: ToolContext) -> Any:
    raise ToolError(
        args["message"],
        retryable=args.get("retryable", False),
        error_type=args.get("error_type", "DebugFail"),
        retry_after=args.get("retry_after"),
    )


_ERROR_TYPE = {
    "type": "string",
    "pattern": "^[A-Za-z][A-Za-z0-9_.]{0,99}$",
    "description": "error_type of the raised error (what retry.non_retryable lists).",
}


def _debug_tools() -> list[Tool]:
    return [
        Tool(
            name="debug.echo",
            description="Testing/diagnostics: return the arguments unchanged. Accepts any properties.",
            # The one schema that is open: echo exists to pass arbitrary data through.
            args_schema={
                "type": "object",
                "properties": {"value": _any("Any JSON value.")},
                "additionalProperties": True,
            },
            handler=_debug_echo,
        ),
        Tool(
            name="debug.sleep",
            description="Testing/diagnostics: sleep for some seconds, then return {slept}.",
            args_schema=_obj(
                {
                    "seconds": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 600,
                        "description": "How long to sleep.",
                    }
                },
                required=("seconds",),
            ),
            handler=_debug_sleep,
            local=False,  # long sleeps belong in regular activities (heartbeats, timeouts)
        ),
        Tool(
            name="debug.flaky",
            description="Testing/diagnostics: fail while the attempt number is <= fail_times, "
            "then return {attempt, value}.",
            args_schema=_obj(
                {
                    "fail_times": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 1000,
                        "description": "How many attempts fail before one succeeds.",
                    },
                    "retryable": {
                        "type": "boolean",
                        "default": True,
                        "description": "Whether the failures are retryable.",
                    },
                    "error_type": _ERROR_TYPE,
                    "value": _any("Returned on success."),
                },
                required=("fail_times",),
            ),
            handler=_debug_flaky,
        ),
        Tool(
            name="debug.fail",
            description="Testing/diagnostics: always fail with the given message.",
            args_schema=_obj(
                {
                    "message": {
                        "type": "string",
                        "maxLength": 2000,
                        "description": "Error message.",
                    },
                    "retryable": {
                        "type": "boolean",
                        "default": False,
                        "description": "Whether the failure is retryable.",
                    },
                    "error_type": _ERROR_TYPE,
                    "retry_after": {
                        "type": "number",
                        "description": "Seconds the failure asks to wait before a retry (as a server's "
                        "Retry-After would); the workflow clamps it to the step's max_interval.",
                    },
                },
                required=("message",),
            ),
            handler=_debug_fail,
        ),
    ]
