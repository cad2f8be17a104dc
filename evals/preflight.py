"""Before a live eval's first case: the model's credentials are set and its endpoint answers.

Without this, a missing key fails every case with "Missing credentials" and the eval exits 0, so a
configuration mistake reads as a model scoring 0%.
"""

from __future__ import annotations

import httpx

__all__ = ["EvalNotConfigured", "missing_keys", "preflight"]


class EvalNotConfigured(RuntimeError):
    """A live eval cannot reach its model: a credential or endpoint is missing (the message says which)."""


def missing_keys(model: str, api_base: str | None = None) -> list[str]:
    """The environment variables litellm needs for ``model`` and cannot find."""
    import litellm

    found = litellm.validate_environment(model=model, api_base=api_base)
    return sorted(str(k) for k in found.get("missing_keys") or [])


async def preflight(models: list[str], api_base: str | None) -> None:
    """Raise ``EvalNotConfigured`` naming the variables to set, or the endpoint that does not answer."""
    problems = []
    for model in dict.fromkeys(models):
        missing = missing_keys(model, api_base)
        if missing:
            problems.append(f"model {model!r} needs {' and '.join(missing)} set in the environment")
    if api_base is not None:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                await client.get(api_base)  # any HTTP answer will do: the server is there
        except httpx.HTTPError as exc:
            problems.append(f"--api-base {api_base} does not answer: {type(exc).__name__}: {exc}")
    if problems:
        raise EvalNotConfigured("; ".join(problems) + " (no case was run)")
