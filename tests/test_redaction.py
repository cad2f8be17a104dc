"""Secret redaction finds every form a secret takes in text (issue 11, item 5)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from tools.redaction import MASK, Redactor, clip

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


def test_a_message_cut_through_a_secret_has_the_cut_part_masked() -> None:
    """A tool keeps the start of an error body: a secret the cut went through is only a prefix of
    itself there, which the exact forms miss."""
    secret = "tok-a1b2c3d4e5f6"
    redactor = Redactor([secret])
    assert redactor.message("you sent tok-a1b2c") == "you sent ***"
    assert redactor.message(f"you sent {clip('tok-a1b2c3d4e5f6 and more', 9)} (HTTP 401)") == "you sent ***… (HTTP 401)"
    assert redactor.message("a tok-a1b2c3d4e5f6 b") == "a *** b"
    # too short to tell from text, and text that is not a secret's start, stay
    assert redactor.message("you sent tok") == "you sent tok"
    assert redactor.message("tok-a1b2 then more") == "tok-a1b2 then more"
    assert Redactor().message("tok-a1b2c") == "tok-a1b2c"
