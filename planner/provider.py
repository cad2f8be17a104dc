"""The model call through litellm: configuration checks, structured output, errors, usage and cost.

litellm's own retries are off (``num_retries=0``): whoever calls the planner owns retries (Temporal,
when planning durably). Provider errors map onto retry semantics as in ``executor.worker.llm``: 429 is
``RateLimited``, 5xx/408/timeouts/lost connections are ``ProviderUnreachable`` (both retryable),
other 4xx are ``ProviderRejected`` (not retryable).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from planner.errors import ModelNotConfigured, PlannerError, ProviderRejected, ProviderUnreachable, RateLimited
from planner.schema import response_schema

__all__ = [
    "Completion",
    "Usage",
    "call_model",
    "check_environment",
    "provider_error",
    "provider_key_variable",
    "resolve_model",
    "response_format",
    "text_response",
    "usage_of",
]

Completion = Callable[..., Awaitable[Any]]
MODEL_VARIABLE = "DURAPLAN_MODEL"
# Provider prefix -> the variable litellm reads its key from (the common ones; others ask litellm).
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "xai": "XAI_API_KEY",
}


def resolve_model(model: str | None) -> str:
    """``model``, else ``DURAPLAN_MODEL``; ``ModelNotConfigured`` naming the variable when neither is set."""
    resolved = model or os.environ.get(MODEL_VARIABLE) or None
    if not resolved:
        raise ModelNotConfigured(MODEL_VARIABLE)
    return resolved


def provider_key_variable(model: str) -> str | None:
    """The environment variable holding the key for ``model``'s provider (from its prefix)."""
    prefix = model.split("/", 1)[0] if "/" in model else None
    if prefix in KEY_VARIABLES:
        return KEY_VARIABLES[prefix]
    import litellm

    try:
        provider = str(litellm.get_llm_provider(model)[1])
    except Exception:
        provider = prefix or ""
    if provider in KEY_VARIABLES:
        return KEY_VARIABLES[provider]
    return f"{provider.upper()}_API_KEY" if provider else None


def check_environment(model: str) -> None:
    """``ModelNotConfigured`` naming the missing variable when litellm lacks what ``model`` needs.

    A local OpenAI-compatible server (``openai/<model>`` + ``OPENAI_API_BASE``) still needs
    ``OPENAI_API_KEY`` set (to any value when the server ignores it): the OpenAI client insists.
    """
    import litellm

    try:
        found = litellm.validate_environment(model=model)
    except Exception:
        return  # litellm does not know the provider: the call itself will say what is wrong
    missing = [str(k) for k in found.get("missing_keys") or []]
    if found.get("keys_in_environment") or not missing:
        return
    preferred = provider_key_variable(model)
    raise ModelNotConfigured(preferred if preferred in missing else missing[0], model)


def response_format(model: str) -> dict[str, Any]:
    """The plan's JSON Schema where litellm says the model takes one; JSON mode otherwise."""
    import litellm

    try:
        schema_ok = bool(litellm.supports_response_schema(model=model))
    except Exception:
        schema_ok = False
    if schema_ok:
        return {
            "type": "json_schema",
            "json_schema": {"name": "duraplan_plan", "schema": response_schema(), "strict": False},
        }
    return {"type": "json_object"}


async def call_model(completion: Completion | None, **kwargs: Any) -> Any:
    """One model call (``num_retries=0``); provider failures come out as ``PlannerError``s."""
    if completion is None:
        import litellm

        completion = litellm.acompletion
    try:
        return await completion(num_retries=0, **kwargs)
    except AssertionError:
        raise  # a test double's complaint (e.g. ScriptedModel's unexpected call): never masked
    except PlannerError:
        raise
    except Exception as exc:
        raise provider_error(exc) from None


def provider_error(exc: BaseException) -> PlannerError:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    text = f"model provider: {name}: {_short(exc)}"
    if isinstance(status, int):
        if status == 429:
            return RateLimited(text, _retry_after(exc))
        if status >= 500 or status == 408:
            return ProviderUnreachable(text, status)
        return ProviderRejected(text, status)
    if any(word in name for word in ("Timeout", "Connection", "ServiceUnavailable")):
        return ProviderUnreachable(text)
    return PlannerError(text)


def _retry_after(exc: BaseException) -> float | None:
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        try:
            value = source.get("retry-after") if source is not None else None
        except Exception:
            value = None
        if value is not None:
            try:
                return max(float(value), 0.0)
            except (TypeError, ValueError):
                return None
    return None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def text_response(
    text: str, model: str, prompt_tokens: int, completion_tokens: int, *, cost_usd: float | None = None
) -> Any:
    """A real ``litellm.ModelResponse`` with one assistant message and its usage, for model doubles
    and replays; ``cost_usd``, when given, is what ``usage_of`` reports instead of today's price."""
    import litellm

    response = litellm.ModelResponse(
        model=model,
        choices=[{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    )
    if cost_usd is not None:
        response._hidden_params["response_cost"] = cost_usd
    return response


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def usage_of(response: Any, model: str) -> Usage:
    """Tokens from ``response.usage``; cost from litellm (``completion_cost``), 0 when it cannot tell."""
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    cost: Any = None
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict):
        cost = hidden.get("response_cost")
    if cost is None:
        try:
            import litellm

            cost = litellm.completion_cost(completion_response=response)
        except Exception:
            cost = 0.0
    try:
        return Usage(prompt, completion, float(cost or 0.0))
    except (TypeError, ValueError):
        return Usage(prompt, completion, 0.0)
