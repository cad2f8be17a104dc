"""Which model names a plan, a script or an API client may choose: the model, never the endpoint.

litellm reads more than a name from a model string. ``huggingface/https://host/...`` is an endpoint
URL it posts to (with the operator's Hugging Face key), and several providers call a server on the
worker's own host when their base URL is not configured: ``ollama/x`` posts to
``localhost:11434``, ``lemonade/x`` to ``localhost:8000`` (duraplan's own API port), ``llamafile/x``
to ``127.0.0.1:8080``, and the answer, or its error text, came back into the step's output or
error. So a tenant-chosen model (an llm step's or ``llm()``'s ``model``, the planner endpoints'
``model``) may not name an endpoint nor one of those providers; the operator's own default model
(``DURAPLAN_MODEL``) is not a tenant's choice and is not checked. A local server is reached the
documented way: ``openai/<served model>`` with ``OPENAI_API_BASE`` set by the operator.
"""

from __future__ import annotations

__all__ = ["LOCAL_PROVIDERS", "model_problem"]

# litellm providers whose endpoint, unless the operator configured one, is on the calling host.
LOCAL_PROVIDERS = frozenset(
    {
        "ollama",
        "ollama_chat",
        "llamafile",
        "lemonade",
        "langgraph",
        "langflow",
        "docker_model_runner",
        "lm_studio",
        "hosted_vllm",
        "vllm",
        "xinference",
        "oobabooga",
        "triton",
        "custom",
        "custom_openai",
    }
)
MAX_MODEL_CHARS = 200


def model_problem(model: str) -> str | None:
    """Why a tenant may not choose ``model``, else None."""
    if not 0 < len(model) <= MAX_MODEL_CHARS:
        return f"a model name is 1 to {MAX_MODEL_CHARS} characters, not {len(model)}"
    if "://" in model or any(c.isspace() or not c.isprintable() for c in model):
        return f"model {model[:80]!r} names an endpoint: choose a model by name (the endpoint is the operator's)"
    provider = model.split("/", 1)[0].lower() if "/" in model else ""
    if provider in LOCAL_PROVIDERS:
        return (
            f"model provider {provider!r} calls a server on the worker's own host; the operator serves local "
            "models as openai/<model> with OPENAI_API_BASE"
        )
    return None
