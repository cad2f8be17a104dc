"""``PinnedTransport``: the httpx transport that connects only to addresses ``HttpPolicy.check``
vetted (``tools.egress`` says why).

Apart from ``tools.egress`` so that a policy (built with every tool registry) does not import
httpcore's transport machinery; HTTP tools import this when they send a request.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from tools.egress import EgressTarget, IPAddress, _norm_host
from tools.errors import ToolError

__all__ = ["PinnedTransport"]


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that connects only where ``HttpPolicy.check`` said it may.

    Call ``pin(target)`` with the ``EgressTarget`` of each request (each redirect hop) before
    sending it. The connection goes to ``target.addresses`` in order, never to a fresh lookup
    of the name; the URL is untouched, so the Host header, TLS SNI and certificate checks all
    use the host name. A connection for any other host or port is refused (EgressDenied), and
    nothing is kept alive, so every hop gets a new connection to the addresses vetted for it.

    One transport serves one exchange (a request and its redirects), one request at a time:
    the pin is per transport. The pinning sits in the httpcore network backend, below the
    connection pool that respx patches: with respx active no connection is made at all,
    without it every one is pinned.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        # verify=False: the parent's pool is replaced below, don't load a CA bundle for it.
        super().__init__(verify=False, trust_env=False)
        self._backend = _PinnedBackend(network_backend if network_backend is not None else httpcore.AnyIOBackend())
        # The pool httpx builds (no proxy, no HTTP/2), on our backend and without keep-alive.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_default_ssl_context() if verify is True else httpx.create_ssl_context(verify=verify),
            max_keepalive_connections=0,
            network_backend=self._backend,
        )

    def pin(self, target: EgressTarget) -> None:
        """Allow the next connection to ``target``'s host and port, to its vetted addresses only."""
        self._backend.pin(target)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; a context can serve many connections.
    return httpx.create_ssl_context(verify=True, trust_env=False)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner
        self._pinned: tuple[str, int, tuple[IPAddress, ...]] | None = None

    def pin(self, target: EgressTarget) -> None:
        # httpcore connects to the URL's raw (IDNA-encoded) host: key the pin the same way.
        self._pinned = (_norm_host(target.url.raw_host.decode("ascii")), target.port, target.addresses)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pinned = self._pinned
        if pinned is None or (_norm_host(host), port) != pinned[:2]:
            raise ToolError(
                f"egress denied: connection to {host}:{port} was not vetted by the egress policy",
                retryable=False,
                error_type="EgressDenied",
            )
        addresses = pinned[2]
        if not addresses:  # block_private=False: the name was vetted, not its addresses
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ToolError("egress denied: unix sockets are not allowed", retryable=False, error_type="EgressDenied")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
