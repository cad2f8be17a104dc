"""Secret redaction: every form a secret can take in text is replaced before a value leaves a step.

A secret reaches text in more shapes than its exact string: an HTTP library quotes a header value
with its CR/LF escaped (``b'tok\\r\\nX: 1'``), JSON escapes it, a URL percent-encodes it, Basic auth
base64-encodes it, and a multi-line secret can surface one line at a time. ``secret_forms`` lists
those shapes; ``redact`` replaces them (longest first, so a form is never left half-replaced)
anywhere in a JSON-like value, keys included. The activities apply it with *all* of the tenant's
secrets to every output and error of every step, not only with the secrets the step itself used.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_FRAGMENT", "Redactor", "secret_forms"]

MASK = "***"
MIN_FRAGMENT = 4  # shorter lines of a multi-line secret are too common to replace on their own


def secret_forms(secret: str) -> set[str]:
    """The shapes ``secret`` takes in error messages, logs and encoded outputs."""
    if not secret:
        return set()
    raw = secret.encode()
    forms = {
        secret,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        repr(raw)[2:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    for line in re.split(r"\r\n|\r|\n|\\r|\\n", secret):
        if len(line.strip()) >= MIN_FRAGMENT:
            forms.add(line)
    return {f for f in forms if f}


class Redactor:
    """Replaces every form of a set of secrets in strings, lists and dict keys and values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            forms |= secret_forms(secret)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        return value if self._pattern is None else self._pattern.sub(MASK, value)

    def value(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        return value

    def contains(self, value: Any) -> bool:
        """Whether any form of a secret occurs anywhere in ``value`` (keys included)."""
        if self._pattern is None:
            return False
        if isinstance(value, str):
            return self._pattern.search(value) is not None
        if isinstance(value, list | tuple):
            return any(self.contains(v) for v in value)
        if isinstance(value, dict):
            return any(self.contains(k) or self.contains(v) for k, v in value.items())
        return False
