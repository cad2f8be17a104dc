"""Reading an HTTP response body with a cap on what it can make us hold.

httpx decompresses each network chunk whole (``aiter_bytes``): one 64 KiB chunk of gzip can
inflate to ~64 MiB before a cap counted on the decoded bytes sees it. Here the bytes are read as
sent (``aiter_raw``) and every gzip/deflate layer inflates with ``max_length``, so neither the
bytes received nor any layer's output ever passes ``limit + 1``.
"""

from __future__ import annotations

import zlib

import httpx

__all__ = ["ACCEPT_ENCODING", "BodyTooLarge", "read_bounded"]

# What we ask servers for: the codings ``read_bounded`` can inflate with a bound (not br/zstd,
# which httpx would otherwise offer when their packages are installed).
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """The body (as received or as decoded) is larger than the cap."""


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body, refusing (``BodyTooLarge``) more than ``limit`` bytes as received or as decoded.

    A declared Content-Length over the cap is refused before reading; reading stops at the first
    chunk that takes the received bytes past it. A body that cannot be inflated is an
    ``httpx.DecodingError``.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    decoder = _BoundedDecoder(response.headers.get_list("content-encoding", split_commas=True), limit)
    received = 0
    body = bytearray()
    # aiter_raw: the bytes as sent (transfer framing removed, content coding not).
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge
        body += decoder.feed(chunk)
    body += decoder.flush()
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
            raise BodyTooLarge
        return data
