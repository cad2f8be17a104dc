"""The HTTP requests of the built-in ``http.request`` and ``notify`` tools: redirects followed by
hand through ``HttpPolicy``, bodies read with a cap, statuses turned into ``ToolError``s.

Apart from ``tools.builtin`` so that building the tool registry (``duraplan validate``, a client
that reads runs) does not import httpx: a handler imports this module when it runs.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

import httpx

from executor.lang.depth import MAX_JSON_DEPTH, deepest
from tools.bounded_body import ACCEPT_ENCODING, BodyTooLarge, read_bounded
from tools.builtin import MAX_RETRY_AFTER_S
from tools.egress import HttpPolicy, redact_url
from tools.errors import ToolArgumentsError, ToolError
from tools.redaction import clip
from tools.transport import PinnedTransport

__all__ = ["MISSING", "fetch", "raise_for_status"]

MISSING = object()  # no ``json`` argument (JSON null is a body)


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
            except (ValueError, RecursionError):
                text = self.text()  # says JSON but isn't: give the caller the raw text
            else:
                if deepest(parsed, MAX_JSON_DEPTH) is not None:  # no step could hold it: as text
                    parsed, text = None, self.text()
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


async def fetch(
    policy: HttpPolicy,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    params: Any = None,
    json_body: Any = MISSING,
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
                json=None if json_body is MISSING else json_body,
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
    except (httpx.LocalProtocolError, UnicodeEncodeError) as exc:
        # The request itself is malformed (a header value with CR/LF, or outside ASCII, which
        # escaped as a retryable tool bug): the same bytes fail again.
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


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, refusing more than max_bytes as received or as decoded (see tools.bounded_body)."""
    try:
        return await read_bounded(response, max_bytes)
    except BodyTooLarge:
        raise _too_large(response, max_bytes) from None


def _too_large(response: httpx.Response, max_bytes: int) -> ToolError:
    return ToolError(
        f"response from {response.request.method} {redact_url(response.request.url)} exceeds max_bytes={max_bytes}",
        retryable=False,
        error_type="HttpResponseTooLarge",
    )


def raise_for_status(response: _Fetched, *, ok_below: int) -> None:
    """Raise for a status at or above ``ok_below``: retryable for 429 and 5xx, else permanent."""
    code = response.status
    if code < ok_below:
        return
    snippet = clip(response.text(), 300)
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
