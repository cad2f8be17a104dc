"""Secret redaction finds every form a secret takes in text (issue 11, item 5)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from tools.redaction import MASK, Redactor

SECRET = "tok-5up3r\r\nX-Injected: s3cr3t"


def test_every_form_of_a_secret_is_redacted() -> None:
    r = Redactor([SECRET])
    forms = [
        SECRET,
        repr(SECRET.encode()),  # how h11/httpx quote an illegal header value: b'tok\r\n...'
        repr(SECRET),
        json.dumps(SECRET),
        quote(SECRET, safe=""),
        base64.b64encode(SECRET.encode()).decode(),
        "X-Injected: s3cr3t",  # one line of a multi-line secret
    ]
    for form in forms:
        text = f"Illegal header value {form} in request"
        out = r.text(text)
        assert "5up3r" not in out and "s3cr3t" not in out, (form, out)
        assert MASK in out


def test_values_and_keys_are_redacted_and_contains_sees_them() -> None:
    r = Redactor(["hunter2-long"])
    value = {"hunter2-long": ["a hunter2-long b", 3, None], "n": {"k": "x"}}
    assert r.value(value) == {MASK: [f"a {MASK} b", 3, None], "n": {"k": "x"}}
    assert r.contains(value) and not r.contains({"n": "x"})
    assert not Redactor() and Redactor().value(value) == value


def test_longest_form_wins() -> None:
    r = Redactor(["abcd", "abcdefgh"])
    assert r.text("xabcdefghx") == f"x{MASK}x"
