"""Secret redaction: every form a secret can take in text is replaced before a value leaves a step.

A secret reaches text in more shapes than its exact string: an HTTP library quotes a header value
with its CR/LF escaped (``b'tok\\r\\nX: 1'``), JSON escapes it, a URL percent-encodes it, Basic auth
base64-encodes it, and a multi-line secret can surface one line at a time. ``secret_forms`` lists
those shapes; ``redact`` replaces them (longest first, so a form is never left half-replaced)
anywhere in a JSON-like value, keys included. The activities apply it with *all* of the tenant's
secrets to every output and error of every step, not only with the secrets the step itself used.

An error message is often cut before it gets here (a tool keeps the first few hundred characters of
an error body): a secret the cut went through is only a prefix of itself, which no form matches.
``message`` also masks such a prefix where text was cut: at the end, or before an ellipsis.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_FRAGMENT", "Redactor", "clip", "secret_forms"]

MASK = "***"
MIN_FRAGMENT = 4  # shorter lines of a multi-line secret are too common to replace on their own
ELLIPSIS = "…"
# Where a message may have been cut short (besides its end): clip's ellipsis and bounded_text's
# "... [N more bytes cut]". Only the last few are looked at: text can hold any number of them.
_CUTS = re.compile(r"…|\.\.\. \[")
_MAX_CUTS = 16


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut (``Redactor.message``
    masks a secret the cut went through)."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


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
        self._forms = [f for f in ordered if len(f) > MIN_FRAGMENT]
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        return value if self._pattern is None else self._pattern.sub(MASK, value)

    def message(self, value: str) -> str:
        """``text``, and a secret's first characters where the message was cut (module doc)."""
        if self._pattern is None:
            return value
        value = self.text(value)
        ends = [*[m.start() for m in _CUTS.finditer(value)][-_MAX_CUTS:], len(value)]
        out, done = [], 0
        for end in ends:
            start = self._cut_prefix(value, max(done, 0), end)
            if start < end:
                out += [value[done:start], MASK]
                done = end
        return "".join(out) + value[done:]

    def _cut_prefix(self, text: str, floor: int, end: int) -> int:
        """Where the longest start (>= MIN_FRAGMENT characters) of a secret's form that ends at
        ``end`` begins, else ``end``."""
        best = end
        for form in self._forms:
            head = form[:MIN_FRAGMENT]
            i = text.find(head, max(floor, end - len(form) + 1), end)
            while i != -1 and end - i >= MIN_FRAGMENT and i < best:
                if form.startswith(text[i:end]):
                    best = i
                    break
                i = text.find(head, i + 1, end)
        return best

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
