"""The HTTP requests of the built-in ``http.request`` and ``notify`` tools: redirects followed by
hand through ``HttpPolicy``, bodies read with a cap, statuses turned into ``ToolError``s.

Apart from ``tools.builtin`` so that building the tool registry (``duraplan validate``, a client
that reads runs) does not import httpx: a handler imports this module when it runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

from tools.builtin import ACCEPT_ENCODING, MAX_RETRY_AFTER_S
from tools.egress import HttpPolicy, redact_url
from tools.errors import ToolArgumentsError, ToolError
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


def raise_for_status(response: _Fetched, *, ok_below: int) -> None:
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
