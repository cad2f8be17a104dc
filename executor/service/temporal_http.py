"""A small client of Temporal's HTTP API (grpc-gateway JSON), on the standard library.

The CLI's everyday commands read runs and send events through it, so they start without the
Temporal SDK (importing ``temporalio.client`` alone takes ~0.3 s; ``http.client`` ~0.02 s).

Two servers speak this API: the frontend's own HTTP port (``temporal server start-dev
--http-port``, Temporal Cloud) and the Temporal UI server (``/api/v1`` on the UI port). duraplan's
workflow ids are ``<tenant>/<run_id>``, and only the UI server routes an escaped ``/`` in a path
(the frontend's gateway unescapes the path before routing, so every per-workflow call there finds
no route): on the frontend only listing works, and the rest is ``HttpUnavailable``, whose callers
use the SDK instead. Payloads are always sent and read in full form (base64 ``data`` plus
``metadata``; ``noPayloadShorthand``), the same on both servers.

    HttpUnavailable        the request did not get a Temporal answer (no server, no route, refused
                           credentials, a gateway error): the caller may use the SDK instead
    TemporalHttpError      Temporal answered with an error status (``code``: the gRPC code)
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "NOT_FOUND",
    "HttpUnavailable",
    "TemporalHttp",
    "TemporalHttpError",
    "decode_payload",
    "encode_payload",
    "parse_timestamp",
]

NOT_FOUND = 5  # the gRPC status code
_JSON_PLAIN = base64.b64encode(b"json/plain").decode()
_NOT_FOUND_DETAIL = "type.googleapis.com/temporal.api.errordetails.v1.NotFoundFailure"
_COMPLETED = "UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED"
# The UI server refuses a POST without its CSRF token (double submit: the same value as cookie and
# header); the frontend ignores both.
_CSRF = secrets.token_hex(16)


class HttpUnavailable(Exception):
    """No answer from Temporal over HTTP: the caller may use the SDK instead."""


class TemporalHttpError(Exception):
    """Temporal answered with an error status; ``code`` is the gRPC status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class HttpEndpoint:
    """Where Temporal's HTTP API is and how to authenticate to it."""

    url: str  # http(s)://host:port, without /api/v1
    namespace: str
    api_key: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    timeout: float = 75.0  # a query may wait for a worker up to the server's own limit (~1 min)


def encode_payload(value: Any) -> dict[str, Any]:
    """A json/plain payload, written as the duraplan data converter writes it (UTF-8, compact)."""
    data = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    return {"metadata": {"encoding": _JSON_PLAIN}, "data": base64.b64encode(data).decode()}


def decode_payload(payload: Any) -> Any:
    """A payload's value: full form (json/plain or binary/null), else the shorthand value itself."""
    if not isinstance(payload, dict) or "metadata" not in payload:
        return payload
    encoding = base64.b64decode(payload["metadata"].get("encoding", "")).decode()
    if encoding == "binary/null":
        return None
    if encoding != "json/plain":
        raise HttpUnavailable(f"payload encoding {encoding!r} is not JSON")
    return json.loads(base64.b64decode(payload.get("data", "")))


def parse_timestamp(text: str | None) -> str | None:
    """An RFC 3339 timestamp as the SDK shows it: ``datetime.isoformat()``, UTC, microseconds
    truncated (protobuf's ``Timestamp.ToDatetime``)."""
    if not text:
        return None
    from datetime import UTC, datetime

    stamp = text.rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return datetime.fromisoformat(whole).replace(microsecond=micros, tzinfo=UTC).isoformat()


class TemporalHttp:
    """The calls reading a run and sending it an update need; one connection, reused."""

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint
        parsed = urllib.parse.urlsplit(endpoint.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"Temporal HTTP address {endpoint.url!r} is not http(s)://host:port")
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        # What messages name: never a user:password the address may carry.
        self.url = f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        self._base = f"{parsed.path.rstrip('/')}/api/v1/namespaces/{_quote(endpoint.namespace)}"
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.endpoint.timeout, context=self._tls()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.endpoint.timeout)
        return self._conn

    def _tls(self) -> Any:
        import ssl

        context = ssl.create_default_context(cafile=str(self.endpoint.tls_ca) if self.endpoint.tls_ca else None)
        if self.endpoint.tls_cert is not None:
            context.load_cert_chain(self.endpoint.tls_cert, self.endpoint.tls_key)
        return context

    def _call(self, method: str, path: str, body: Any = None, *, sent: list[bool] | None = None) -> Any:
        """The JSON answer; ``sent`` becomes ``[True]`` once the request may have reached the server."""
        headers = {"Accept": "application/json", "Cookie": f"_csrf={_CSRF}", "X-CSRF-TOKEN": _CSRF}
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        sep = "&" if "?" in path else "?"
        url = f"{self._base}{path}{sep}noPayloadShorthand"
        conn = self._connection()
        try:
            conn.request(method, url, body=data, headers=headers)
            if sent is not None:
                sent.append(True)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise HttpUnavailable(f"{self.url}: {exc}") from None
        return _answer(response.status, raw, self.url)

    def describe(self, workflow_id: str) -> dict[str, Any]:
        """``DescribeWorkflowExecution`` of the id's latest run."""
        answer: dict[str, Any] = self._call("GET", f"/workflows/{_quote(workflow_id)}")
        return answer

    def query(self, workflow_id: str, name: str, *args: Any) -> Any:
        """The query's answer, decoded."""
        body = {"query": {"queryArgs": {"payloads": [encode_payload(a) for a in args]}}}
        answer = self._call("POST", f"/workflows/{_quote(workflow_id)}/query/{_quote(name)}", body)
        if answer.get("queryRejected"):
            raise TemporalHttpError(9, f"query rejected: {answer['queryRejected']}")
        payloads = (answer.get("queryResult") or {}).get("payloads") or []
        return decode_payload(payloads[0]) if payloads else None

    def update(self, workflow_id: str, name: str, args: tuple[Any, ...], update_id: str) -> dict[str, Any]:
        """Run update ``name`` to completion; its ``outcome`` (``success`` payloads or ``failure``).

        The server answers once the update completed or after a long-poll timeout: asked again
        with the same ``update_id``, it does not run twice. A failure before the request may have
        been delivered is ``HttpUnavailable``; after, a ``TemporalHttpError`` (never a second try
        by another path that could not tell it is the same update)."""
        body = {
            "request": {
                "meta": {"updateId": update_id},
                "input": {"args": {"payloads": [encode_payload(a) for a in args]}},
            },
            "waitPolicy": {"lifecycleStage": _COMPLETED},
        }
        path = f"/workflows/{_quote(workflow_id)}/update/{_quote(name)}"
        delivered = False
        for _ in range(10):
            sent: list[bool] = []
            try:
                answer = self._call("POST", path, body, sent=sent)
            except HttpUnavailable as exc:
                delivered = delivered or bool(sent)
                if not delivered:
                    raise
                message = f"cannot connect to Temporal to finish update {update_id!r}: {exc}"
                raise TemporalHttpError(14, message) from None
            delivered = True
            outcome: dict[str, Any] | None = answer.get("outcome")
            if outcome:
                return outcome
        raise TemporalHttpError(4, f"update {update_id!r} did not complete")

    def request_cancel(self, workflow_id: str) -> None:
        """``RequestCancelWorkflowExecution`` of the id's latest run."""
        self._call("POST", f"/workflows/{_quote(workflow_id)}/cancel", {"requestId": secrets.token_hex(16)})

    def terminate(self, workflow_id: str, reason: str) -> None:
        """``TerminateWorkflowExecution`` of the id's latest run."""
        self._call("POST", f"/workflows/{_quote(workflow_id)}/terminate", {"reason": reason})

    def list(self, query: str, page_size: int) -> Iterator[dict[str, Any]]:
        """``ListWorkflowExecutions``: every matching execution, newest first, page by page."""
        token = ""
        while True:
            params = {"query": query, "pageSize": str(page_size)}
            if token:
                params["nextPageToken"] = token
            answer = self._call("GET", "/workflows?" + urllib.parse.urlencode(params))
            yield from answer.get("executions") or []
            token = answer.get("nextPageToken") or ""
            if not token:
                return


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _answer(status: int, raw: bytes, url: str) -> Any:
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        raise HttpUnavailable(f"{url} answered {status} with no JSON") from None
    if 200 <= status < 300 and isinstance(answer, dict):
        return answer
    # Credentials refused, or an error not from Temporal's gateway (a proxy's): no Temporal answer.
    if not isinstance(answer, dict) or "code" not in answer or status in (401, 403):
        raise HttpUnavailable(f"{url} answered {status}: {str(answer)[:200]}")
    code, message = int(answer["code"]), str(answer.get("message", ""))
    details = [d.get("@type") for d in answer.get("details") or [] if isinstance(d, dict)]
    if code == NOT_FOUND and _NOT_FOUND_DETAIL not in details:
        # No route (the frontend's gateway and a workflow id holding "/"): not Temporal's answer.
        raise HttpUnavailable(f"{url}: no such HTTP route ({message})")
    raise TemporalHttpError(code, message)
