"""The llm step's model call, through litellm, with Temporal owning every retry.

litellm's own retries are off (``num_retries=0``). Provider errors map onto retry semantics the
way Temporal's own OpenAI integration does: 429 and 5xx (and timeouts, lost connections) may be
retried; other 4xx are the plan's or the configuration's fault and fail at once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.exceptions import ApplicationError

from executor.engine.models import LlmCall
from executor.lang.json_schema import schema_problem, validator
from executor.service.telemetry import model_span

__all__ = ["complete", "provider_error"]


async def complete(
    call: LlmCall,
    model: str,
    completion: Callable[..., Awaitable[Any]] | None = None,
    *,
    on_usage: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """``on_usage(prompt_tokens, completion_tokens)`` hears the tokens as soon as the answer is in."""
    import litellm

    messages = [{"role": "system", "content": call.system}] if call.system else []
    messages.append({"role": "user", "content": call.prompt})
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "num_retries": 0}
    if call.temperature is not None:
        kwargs["temperature"] = call.temperature
    if call.max_tokens is not None:
        kwargs["max_tokens"] = call.max_tokens
    if call.timeout_s is not None:
        kwargs["timeout"] = call.timeout_s
    if call.output_schema is not None:
        # A script computes its output_schema at run time (plans' literal ones were checked at submit):
        # refused before the model is paid for, and never retried.
        problem = schema_problem(call.output_schema)
        if problem is not None:
            raise ApplicationError(
                f"output_schema{problem[0]} is not usable: {problem[1]}", type="InvalidSchema", non_retryable=True
            )
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "step_output", "schema": call.output_schema},
        }
    try:
        with model_span(model) as current:
            response = await (completion or litellm.acompletion)(**kwargs)
            usage = getattr(response, "usage", None)
            current.set_attribute("gen_ai.usage.input_tokens", int(getattr(usage, "prompt_tokens", 0) or 0))
            current.set_attribute("gen_ai.usage.output_tokens", int(getattr(usage, "completion_tokens", 0) or 0))
    except Exception as exc:
        raise provider_error(exc) from None
    text = response.choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    if on_usage is not None:
        on_usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))
    result: dict[str, Any] = {
        "content": text,
        "model": getattr(response, "model", model),
        "usage": {
            "prompt_tokens": getattr(usage, "prompt_tokens", 0),
            "completion_tokens": getattr(usage, "completion_tokens", 0),
        },
    }
    if call.output_schema is not None:
        result["content"] = _parse_structured(text, call.output_schema)
    return result


def _parse_structured(text: str, schema: dict[str, Any]) -> Any:
    stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        # Models vary between attempts: another try may well produce valid JSON.
        raise ApplicationError(f"model answer is not JSON: {exc}", type="LlmOutputInvalid") from None
    except RecursionError:  # nested past the parser's stack: was an uncaught error with its traceback
        raise ApplicationError("model answer is JSON nested too deep", type="LlmOutputInvalid") from None
    except ValueError as exc:  # an integer of thousands of digits
        reason = str(exc).split(";")[0]
        raise ApplicationError(f"model answer is not usable JSON: {reason}", type="LlmOutputInvalid") from None
    errors = sorted(validator(schema).iter_errors(value), key=str)
    if errors:
        where = "".join(f"/{p}" for p in errors[0].path) or "/"
        raise ApplicationError(
            f"model answer breaks output_schema at {where}: {errors[0].message}", type="LlmOutputInvalid"
        )
    return value


def provider_error(exc: Exception) -> ApplicationError:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(status, int):
        retryable = status == 429 or status >= 500 or status == 408
        return ApplicationError(
            f"model provider answered {status}: {_short(exc)}",
            {"retry_after": None},
            type=f"LlmHttp{status}",
            non_retryable=not retryable,
        )
    # No status: timeouts and connection failures are worth another attempt.
    retryable = any(word in name for word in ("Timeout", "Connection", "ServiceUnavailable"))
    return ApplicationError(f"model call failed: {name}: {_short(exc)}", type=f"Llm{name}", non_retryable=not retryable)


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"
