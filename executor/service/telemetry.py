"""Traces and SDK metrics, off unless configured: one process-wide setup, made at the edges.

``configure_telemetry(settings)`` (called by ``connect`` and the worker) turns on what the settings
ask for: OpenTelemetry traces exported by OTLP/HTTP to ``otlp_endpoint``, and Temporal's SDK
metrics served for Prometheus on ``prometheus_address`` (a ``Runtime`` of its own, which every
client connected afterwards in this process uses). With tracing on, clients and workers carry
temporalio's ``TracingInterceptor``: one trace runs from submit (``duraplan.submit``) through the
workflow (``RunWorkflow``) to each step attempt (``duraplan.step``), its tool call
(``duraplan.tool``) or model call (``duraplan.model``), with tenant, session, run and step
attributes. Off, the tracer is OpenTelemetry's no-op one: no spans, no interceptors, no cost.

Workflow code never touches this module: the interceptor carries the context through headers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from temporalio.client import Interceptor
    from temporalio.runtime import Runtime

    from executor.service.config import Settings

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_KIND",
    "ATTR_RUN",
    "ATTR_SESSION",
    "ATTR_STEP",
    "ATTR_TENANT",
    "client_interceptors",
    "configure_telemetry",
    "disable_metrics",
    "disable_tracing",
    "enable_tracing",
    "flush_tracing",
    "model_span",
    "runtime",
    "span",
    "step_span",
    "submit_span",
    "tool_span",
    "tracer",
    "tracing_enabled",
]

ATTR_TENANT = "duraplan.tenant"
ATTR_SESSION = "duraplan.session"
ATTR_RUN = "duraplan.run_id"
ATTR_STEP = "duraplan.step"
ATTR_KIND = "duraplan.step_kind"
ATTR_ATTEMPT = "duraplan.attempt"

_lock = threading.Lock()
_tracer: trace.Tracer = trace.NoOpTracer()
_interceptor: Any = None  # the TracingInterceptor, when tracing is on
_provider: Any = None  # the SDK TracerProvider configure_telemetry made (flushed at exit)
_runtime: Runtime | None = None
_configured: set[str] = set()


def tracer() -> trace.Tracer:
    return _tracer


def tracing_enabled() -> bool:
    return _interceptor is not None


def enable_tracing(provider: TracerProvider | trace.TracerProvider) -> None:
    """Record spans with ``provider`` (tests pass one with an in-memory exporter)."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    global _tracer, _interceptor
    with _lock:
        _tracer = provider.get_tracer("duraplan")
        _interceptor = TracingInterceptor(_tracer)


def disable_tracing() -> None:
    """Back to no tracing (the OTLP provider configure_telemetry made is flushed and shut down)."""
    global _tracer, _interceptor, _provider
    flush_tracing()
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _tracer, _interceptor, _provider = trace.NoOpTracer(), None, None
        _configured.discard("otlp")


def disable_metrics() -> None:
    """Clients connected from now on use Temporal's default runtime (no Prometheus endpoint)."""
    global _runtime
    with _lock:
        _runtime = None
        _configured.discard("prometheus")


def flush_tracing(timeout_s: float = 5.0) -> None:
    """Export the spans still queued (command-line processes end with ``os._exit``)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def client_interceptors() -> list[Interceptor]:
    """The tracing interceptor when tracing is on (a worker built on the client inherits it)."""
    return [] if _interceptor is None else [_interceptor]


def runtime() -> Runtime | None:
    """The Prometheus-exporting Temporal runtime, when configured (else Temporal's default)."""
    return _runtime


def configure_telemetry(settings: Settings) -> None:
    """Turn on what ``settings`` ask for, once per process (later calls add nothing twice)."""
    global _runtime, _provider
    if settings.otlp_endpoint and "otlp" not in _configured:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "duraplan"}))
        endpoint = settings.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        enable_tracing(provider)
        _provider = provider
        _configured.add("otlp")
    if settings.prometheus_address and "prometheus" not in _configured:
        from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

        _runtime = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.prometheus_address))
        )
        _configured.add("prometheus")


@contextlib.contextmanager
def span(name: str, attributes: dict[str, str | int | float | bool | None]) -> Iterator[trace.Span]:
    """A span under the current one (a no-op when tracing is off); None-valued attributes are left out."""
    attrs = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, attributes=attrs) as current:
        yield current


@contextlib.contextmanager
def submit_span(tenant: str, session: str, run_id: str) -> Iterator[trace.Span]:
    """The root of a run's trace. The session also travels as W3C baggage (the interceptor's
    propagator carries it through the workflow's headers), so step spans can name it."""
    if _interceptor is None:
        yield trace.INVALID_SPAN
        return
    token = otel_context.attach(baggage.set_baggage(ATTR_SESSION, session))
    try:
        with span("duraplan.submit", {ATTR_TENANT: tenant, ATTR_SESSION: session, ATTR_RUN: run_id}) as current:
            yield current
    finally:
        otel_context.detach(token)


def step_span(
    kind: str, tenant: str, run_id: str, path: str, attempt: int
) -> contextlib.AbstractContextManager[trace.Span]:
    """One attempt of an activity step, inside the interceptor's ``RunActivity`` span."""
    session = baggage.get_baggage(ATTR_SESSION) if _interceptor is not None else None
    attributes: dict[str, str | int | float | bool | None] = {
        ATTR_TENANT: tenant,
        ATTR_SESSION: str(session) if session is not None else None,
        ATTR_RUN: run_id,
        ATTR_STEP: path,
        ATTR_KIND: kind,
        ATTR_ATTEMPT: attempt,
    }
    return span(f"duraplan.step {kind}", attributes)


def tool_span(tool: str) -> contextlib.AbstractContextManager[trace.Span]:
    return span("duraplan.tool", {"duraplan.tool": tool})


def model_span(model: str) -> contextlib.AbstractContextManager[trace.Span]:
    # the OpenTelemetry GenAI semantic conventions' names
    return span("duraplan.model", {"gen_ai.request.model": model})
