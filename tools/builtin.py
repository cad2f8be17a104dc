"""The built-in tools: HTTP, JMESPath transforms, tenant key-value state, notifications, and
debug tools for testing retries and timeouts.

Each tool is one handler function plus a strict argument schema; the registry validates
arguments before a handler runs, so handlers only apply defaults and domain checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tools.egress import HttpPolicy
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

_NO_BODY_METHODS = frozenset({"GET", "HEAD"})
# Framing headers are the client's job; letting a plan set them invites request smuggling.
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_MISSING = object()


def builtin_tools(http_policy: HttpPolicy | None = None, *, include_debug: bool = True) -> list[Tool]:
    """All built-in tools; HTTP-making tools (``http.request``, ``notify``) obey ``http_policy``.

    ``include_debug=False`` leaves out the ``debug.*`` tools, which exist for tests and
    diagnostics.
    """
    # Each Tool here says trusted_schema=True: its schema is fixed, and tests/tools/test_tools_builtin.py
    # checks it against the metaschema once instead of every start-up.
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
        from tools.http_fetch import MISSING, fetch, raise_for_status

        method = args.get("method", "GET")
        headers = _request_headers(args.get("headers", {}), method, ctx.idempotency_key)
        response = await fetch(
            ctx.http_policy or policy,
            method,
            args["url"],
            headers=headers,
            params=args.get("params"),
            json_body=args.get("json", MISSING),
            body=args.get("body"),
            timeout_s=float(args.get("timeout_s", DEFAULT_TIMEOUT_S)),
            max_bytes=int(args.get("max_bytes", DEFAULT_MAX_BYTES)),
        )
        raise_for_status(response, ok_below=400)
        return response.as_result()

    return Tool(
        trusted_schema=True,
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


# -- transform -----------------------------------------------------------------------------------


def _transform_tool() -> Tool:
    async def transform(args: dict[str, Any], ctx: ToolContext) -> Any:
        import jmespath
        import jmespath.exceptions

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
        trusted_schema=True,
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
            trusted_schema=True,
            name="kv.get",
            description="Read a value from the tenant's key-value store. Returns "
            "{key, found, value}; value is null when not found.",
            args_schema=_obj({"key": _KEY}, required=("key",)),
            handler=_kv_get,
            accepts_secrets=False,
        ),
        Tool(
            trusted_schema=True,
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
            trusted_schema=True,
            name="kv.delete",
            description="Delete a key. Returns {key, deleted}. Exactly once per step.",
            args_schema=_obj({"key": _KEY}, required=("key",)),
            handler=_kv_delete,
            accepts_secrets=False,
            side_effects=True,
        ),
        Tool(
            trusted_schema=True,
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
            trusted_schema=True,
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
        from tools.http_fetch import fetch, raise_for_status

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
            response = await fetch(
                ctx.http_policy or policy,
                "POST",
                webhook_url,
                headers={"Idempotency-Key": ctx.idempotency_key},
                json_body=payload,
                timeout_s=DEFAULT_TIMEOUT_S,
                max_bytes=WEBHOOK_MAX_BYTES,
            )
            raise_for_status(response, ok_below=300)
            await ctx.store.outbox_mark_delivered(ctx.tenant, ctx.idempotency_key)
            delivered = True
        return {
            "id": ctx.idempotency_key,
            "channel": entry["channel"],
            "delivered": delivered,
            "duplicate": entry["duplicate"],
        }

    return Tool(
        trusted_schema=True,
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
    import asyncio  # loaded with the running loop; not at import: validating a plan runs none

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
            trusted_schema=True,
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
            trusted_schema=True,
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
            trusted_schema=True,
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
            trusted_schema=True,
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
