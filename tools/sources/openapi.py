"""OpenAPI sources: one tool per operation of an HTTP service's OpenAPI (3.x) document.

A tool's arguments are the operation's path, query and header parameters by name, plus ``body``
for a JSON request body; ``$ref``s into ``components/schemas`` become ``$defs`` of the tool's
schema. GET, HEAD and OPTIONS are read-only; every other method has side effects and sends
``Idempotency-Key: <the step's key>`` so the service can apply a retried call once.

Errors: 429 and 5xx are retryable ``HttpStatus<code>`` (with ``retry_after`` from a numeric
``Retry-After``), other 4xx are not; connect failures and timeouts are retryable
(``HttpConnectError``, ``HttpTimeout``); a redirect is not followed (``HttpRedirect``, not
retryable); every URL goes through the tenant's ``HttpPolicy`` and connections are pinned.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from executor.lang.depth import MAX_JSON_DEPTH, deepest
from tools.bounded_body import ACCEPT_ENCODING, BodyTooLarge, read_bounded
from tools.egress import HttpPolicy, redact_url
from tools.redaction import clip
from tools.sources.catalog import Catalog, CatalogTool, SourceError, SourceSpec, unique_tools
from tools.transport import PinnedTransport

__all__ = ["MAX_DOCUMENT_BYTES", "OpenApiClient", "openapi_catalog", "operations"]

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
# Paths, operation, body, media type and schema wrap a tool's schema (itself at most MAX_JSON_DEPTH).
MAX_DOCUMENT_DEPTH = 2 * MAX_JSON_DEPTH
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})
_REF = re.compile(r"^#/components/schemas/([^/]+)$")


class OpenApiClient:
    """HTTP to one service: one vetted, pinned target (the base URL's origin) per client."""

    def __init__(self, spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None, base_url: str) -> None:
        self.spec = spec
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self._policy = policy or HttpPolicy()
        self._client: httpx.AsyncClient | None = None
        self._transport = PinnedTransport()

    @property
    def alive(self) -> bool:
        return self._client is not None

    async def open(self) -> OpenApiClient:
        target = await self._policy.check(self.base_url + "/")
        self._transport.pin(target)
        self._client = httpx.AsyncClient(
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )
        return self

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(self, tool: CatalogTool, args: dict[str, Any], idempotency_key: str, timeout_s: float) -> Any:
        route = tool.route
        path = str(route["path"])
        query: dict[str, Any] = {}
        headers = dict(self._headers)
        for name, where in dict(route.get("params") or {}).items():
            if name not in args:
                continue
            value = args[name]
            if where == "path":
                # "." and ".." would be dot segments: the request would go to another path.
                text = quote(str(value), safe="")
                path = path.replace("{" + name + "}", text.replace(".", "%2E") if text in (".", "..") else text)
            elif where == "query":
                query[name] = json.dumps(value) if isinstance(value, dict | list) else value
            elif where == "header":
                headers[name] = str(value)
        if tool.side_effects:
            headers["Idempotency-Key"] = idempotency_key
        return await self._send(str(route["method"]), self.base_url + path, query, headers, args.get("body"), timeout_s)

    async def _send(
        self, method: str, url: str, query: dict[str, Any], headers: dict[str, str], body: Any, timeout_s: float
    ) -> Any:
        assert self._client is not None
        try:
            request = self._client.build_request(
                method, url, params=query or None, headers=headers, json=body, timeout=timeout_s
            )
        except (httpx.InvalidURL, UnicodeEncodeError) as exc:  # an argument no request can carry
            raise _request_invalid(method, exc) from None
        shown = redact_url(request.url)
        await self._policy.check(request.url)  # the path may not leave the vetted origin
        try:
            response = await self._client.send(request, stream=True)
            try:
                data = await _read_capped(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise SourceError(f"{method} {shown} timed out", retryable=True, error_type="HttpTimeout") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise SourceError(f"{method} {shown}: {exc}", retryable=True, error_type="HttpConnectError") from None
        except httpx.LocalProtocolError as exc:  # e.g. a header argument with CR/LF: never sent
            raise _request_invalid(method, exc) from None
        except httpx.DecodingError as exc:  # the same bytes will not inflate on a retry either
            raise SourceError(f"{method} {shown}: {exc}", error_type="HttpResponseInvalid") from None
        return _result(method, shown, response, data)


def _request_invalid(method: str, exc: Exception) -> SourceError:
    """The step's arguments make a request HTTP cannot carry (a header value with CR/LF or outside
    ASCII, a URL too long): the step's mistake, the same on every attempt, so not retried."""
    return SourceError(f"{method} request is invalid: {exc}", error_type="HttpRequestInvalid")


async def _read_capped(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The body, at most ``limit`` bytes as received and as inflated (one gzip chunk read by httpx
    could inflate to ~64 MiB before a count of decoded bytes saw it)."""
    try:
        return await read_bounded(response, limit)
    except BodyTooLarge:
        raise SourceError(f"response larger than {limit} bytes", error_type="HttpResponseTooLarge") from None


def _result(method: str, shown: str, response: httpx.Response, data: bytes) -> Any:
    text = data.decode(response.encoding or "utf-8", errors="replace")
    try:
        value: Any = json.loads(text) if text else None
    except (ValueError, RecursionError):
        value = text
    if deepest(value, MAX_JSON_DEPTH) is not None:  # nested past what a step can hold: as text
        value = text
    status = response.status_code
    if 300 <= status < 400:
        raise SourceError(f"{method} {shown} answered a redirect ({status}); not followed", error_type="HttpRedirect")
    if status >= 400:
        retry_after = response.headers.get("retry-after", "")
        raise SourceError(
            f"{method} {shown} answered {status}: {clip(text, 500)}",
            retryable=status == 429 or status >= 500,
            error_type=f"HttpStatus{status}",
            retry_after=float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None,
        )
    return {"status": status, "body": value}


# ---- the document ------------------------------------------------------------------------------


def _defs(schema: Any, components: dict[str, Any], found: dict[str, Any]) -> Any:
    """``schema`` with component refs pointing at ``$defs``; the components it uses into ``found``."""
    if isinstance(schema, list):
        return [_defs(v, components, found) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and (match := _REF.match(value)):
            name = match.group(1)
            if name not in found and name in components:
                found[name] = {}
                found[name] = _defs(components[name], components, found)
            out[key] = f"#/$defs/{name}"
        else:
            out[key] = _defs(value, components, found)
    return out


def operations(
    document: dict[str, Any], source: str, base_url: str = ""
) -> tuple[tuple[CatalogTool, ...], tuple[str, ...]]:
    """The document's operations as catalog entries (those it cannot express are skipped, with why)."""
    components = dict((document.get("components") or {}).get("schemas") or {})
    candidates = []
    for path, item in dict(document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method in _METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                remote = str(op.get("operationId") or f"{method}_{path}")
                build = _builder(source, path, method, op, item, components, remote, base_url)
                candidates.append((remote, build))
    return unique_tools(source, candidates)


def _builder(
    source: str,
    path: str,
    method: str,
    op: dict[str, Any],
    item: dict[str, Any],
    components: dict[str, Any],
    remote: str,
    base_url: str,
) -> Any:
    def build() -> CatalogTool:
        found: dict[str, Any] = {}
        properties: dict[str, Any] = {}
        required: list[str] = []
        params: dict[str, str] = {}
        for param in [*(item.get("parameters") or []), *(op.get("parameters") or [])]:
            if "$ref" in param:
                raise ValueError("parameter $refs are not supported")
            where, name = param.get("in"), str(param.get("name"))
            if where == "header" and name.lower() == "idempotency-key":
                continue  # duraplan sends the step's own key
            if where not in ("path", "query", "header"):
                raise ValueError(f"parameter {name!r} in {where!r} is not supported")
            param_schema = _defs(dict(param.get("schema") or {}), components, found)
            if param.get("description"):
                param_schema = {**param_schema, "description": str(param["description"])}
            properties[name], params[name] = param_schema, where
            if param.get("required") or where == "path":
                required.append(name)
        body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
        if body is not None:
            properties["body"] = _defs(dict(body.get("schema") or {}), components, found)
            if op["requestBody"].get("required"):
                required.append("body")
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = sorted(set(required))
        if found:
            schema["$defs"] = found
        upper = method.upper()
        side_effects = upper not in _READ_ONLY
        description = str(op.get("description") or op.get("summary") or f"{upper} {path}").strip()[:4000]
        return CatalogTool.build(
            source,
            remote,
            f"{description} ({upper} {path})",
            schema,
            side_effects=side_effects,
            annotations={"readOnlyHint": not side_effects, "idempotentHint": upper in ("GET", "HEAD", "PUT", "DELETE")},
            route={"method": upper, "path": path, "params": params, "body": body is not None, "base_url": base_url},
        )

    return build


def base_url_of(spec: SourceSpec, document: dict[str, Any]) -> str:
    """Where operations go: the spec's base URL, else the document's first server (relative to it).

    The source's headers (credentials, often) go with every operation. A document naming a server
    on another origin than its own would send them wherever its author (or whoever can change the
    file where it is hosted) chose; so that takes the tenant saying so, with ``base_url``."""
    if spec.base_url:
        return spec.base_url
    servers = document.get("servers") or [{"url": "/"}]
    assert spec.url is not None
    base = urljoin(spec.url, str(servers[0].get("url") or "/"))
    if _origin(base) != _origin(spec.url):
        raise SourceError(
            f"OpenAPI source {spec.name!r}: the document sends operations to {_origin(base)}, another origin"
            f" than its own ({_origin(spec.url)}); give base_url to say the source's headers may go there",
            error_type="OpenApiDocumentInvalid",
        )
    return base


def _origin(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return f"{parsed.scheme}://{parsed.host}:{port}"


async def fetch_document(spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None) -> dict[str, Any]:
    assert spec.url is not None
    policy = policy or HttpPolicy()
    transport = PinnedTransport()
    transport.pin(await policy.check(spec.url))
    async with httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, headers={"Accept-Encoding": ACCEPT_ENCODING}
    ) as client:
        try:
            async with client.stream("GET", spec.url, headers=headers, timeout=spec.timeout_s) as response:
                content = await _read_capped(response, MAX_DOCUMENT_BYTES) if response.status_code == 200 else b""
        except httpx.DecodingError as exc:
            raise SourceError(
                f"OpenAPI source {spec.name!r}: the document cannot be read: {exc}",
                error_type="OpenApiDocumentInvalid",
            ) from None
        except httpx.HTTPError as exc:
            raise SourceError(
                f"OpenAPI source {spec.name!r}: cannot fetch the document: {exc}",
                retryable=True,
                error_type="HttpConnectError",
            ) from None
    if response.status_code != 200:
        raise SourceError(
            f"OpenAPI source {spec.name!r}: the document answered {response.status_code}",
            retryable=response.status_code == 429 or response.status_code >= 500,
            error_type="OpenApiDocumentInvalid",
        )
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        raise SourceError(
            f"OpenAPI source {spec.name!r}: the document is not JSON (or nests too deep)",
            error_type="OpenApiDocumentInvalid",
        ) from None
    problem = _shape_problem(document)
    if problem is not None:
        raise SourceError(f"OpenAPI source {spec.name!r}: {problem}", error_type="OpenApiDocumentInvalid")
    checked: dict[str, Any] = document
    return checked


def _shape_problem(document: Any) -> str | None:
    """Why the document cannot be read as OpenAPI 3, else None: the parts read before each operation
    (a malformed operation is skipped on its own, with why), and a nesting depth recursive code can walk."""
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3"):
        return "not an OpenAPI 3 document"
    too_deep = deepest(document, MAX_DOCUMENT_DEPTH)
    if too_deep is not None:
        return f"the document nests more than {MAX_DOCUMENT_DEPTH} levels deep (at {too_deep[:100]}...)"
    components = document.get("components") or {}
    shapes = (
        ("paths", document.get("paths") or {}, dict),
        ("components", components, dict),
        ("components/schemas", components.get("schemas") or {} if isinstance(components, dict) else {}, dict),
        ("servers", document.get("servers") or [], list),
    )
    for where, value, kind in shapes:
        if not isinstance(value, kind):
            return f"{where} must be {'an object' if kind is dict else 'an array'}, not {type(value).__name__}"
    servers = document.get("servers") or []
    if servers and not (isinstance(servers[0], dict) and isinstance(servers[0].get("url", "/"), str | None)):
        return "servers/0 must be an object with a url string"
    return None


async def openapi_catalog(spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None, now: float) -> Catalog:
    document = await fetch_document(spec, headers, policy)
    # The base URL travels in each route (and its hash): calls go where the document said.
    tools, skipped = operations(document, spec.name, base_url_of(spec, document))
    return Catalog(spec.name, tools, now, skipped)
