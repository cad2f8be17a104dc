"""Tracing: one trace from submit through the workflow to the step's tool call, with the tenant,
session, run and step attributes; recorded by an in-memory exporter."""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client

from executor import Duraplan, Settings, running_worker
from executor.service.config import connect
from executor.service.devserver import DevServer
from executor.service.telemetry import (
    client_interceptors,
    configure_telemetry,
    disable_metrics,
    disable_tracing,
    enable_tracing,
    flush_tracing,
    span,
    tracing_enabled,
)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    enable_tracing(provider)
    try:
        yield memory
    finally:
        disable_tracing()
        provider.shutdown()


def _chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Names from ``span`` up to the root."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_trace_from_submit_to_the_tool_call(
    dev_server: DevServer, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    traced = Client(**{**dev_server.client.config(), "interceptors": client_interceptors()})
    settings = Settings(home=tmp_path, task_queue=f"trace-{uuid.uuid4().hex[:8]}")
    plan = {
        "name": "traced",
        "steps": [
            {"id": "shape", "kind": "tool", "tool": "transform", "args": {"data": [1, 2], "expression": "length(@)"}},
            {"id": "double", "kind": "code", "code": "n * 2", "inputs": {"n": "${steps.shape.output}"}},
        ],
        "output": "${steps.double.output}",
    }
    async with running_worker(traced, settings):
        dp = Duraplan(traced, settings)
        handle = await dp.submit_plan(plan, tenant="acme", session="chat-1", run_id="traced-1")
        assert await handle.result() == 4
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    [submit] = [s for s in spans if s.name == "duraplan.submit"]
    assert dict(submit.attributes or {}) == {
        "duraplan.tenant": "acme",
        "duraplan.session": "chat-1",
        "duraplan.run_id": "traced-1",
    }
    [tool_call] = [s for s in spans if s.name == "duraplan.tool"]
    assert tool_call.context.trace_id == submit.context.trace_id, "one trace from submit to the tool call"
    chain = _chain(tool_call, by_id)
    assert chain[0] == "duraplan.tool" and chain[1] == "duraplan.step tool" and chain[-1] == "duraplan.submit"
    assert "RunActivity:duraplan.tool" in chain and "StartWorkflow:DuraplanRun" in chain, chain
    step = by_id[tool_call.parent.span_id] if tool_call.parent else None
    assert step is not None and dict(step.attributes or {}) == {
        "duraplan.tenant": "acme",
        "duraplan.session": "chat-1",
        "duraplan.run_id": "traced-1",
        "duraplan.step": "shape",
        "duraplan.step_kind": "tool",
        "duraplan.attempt": 1,
    }
    [code_step] = [s for s in spans if s.name == "duraplan.step code"]
    assert code_step.context.trace_id == submit.context.trace_id
    assert {s.context.trace_id for s in spans if s.name.startswith(("duraplan.", "RunActivity", "RunWorkflow"))} == {
        submit.context.trace_id
    }


def test_tracing_is_off_by_default() -> None:
    assert client_interceptors() == []
    assert Settings().otlp_endpoint is None and Settings().prometheus_address is None


def test_otlp_endpoint_setting_exports_spans_over_http(tmp_path: Path) -> None:
    """DURAPLAN_OTLP_ENDPOINT turns tracing on and spans reach the collector by OTLP/HTTP."""
    received: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        configure_telemetry(Settings(otlp_endpoint=f"http://127.0.0.1:{server.server_port}"))
        assert tracing_enabled() and len(client_interceptors()) == 1
        with span("duraplan.submit", {"duraplan.tenant": "acme"}):
            pass
        flush_tracing()
        assert [path for path, _ in received] == ["/v1/traces"]
        assert b"duraplan.submit" in received[0][1] and b"acme" in received[0][1]
    finally:
        disable_tracing()
        server.shutdown()
        server.server_close()
    assert not tracing_enabled()


async def test_prometheus_address_serves_temporal_sdk_metrics(dev_server: DevServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        configure_telemetry(Settings(prometheus_address=f"127.0.0.1:{port}"))
        client = await connect(Settings(address=dev_server.address))
        await client.count_workflows("WorkflowType = 'DuraplanRun'")
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert "temporal_request" in body, body[:500]
    finally:
        disable_metrics()
