"""JSON Schemas from outside (plans, tool sources): a ``$ref`` never fetches anything and a ``$ref``
cycle never recurses for ever; a malformed OpenAPI document is a refusal, never a crash.

Found by probing: a plan's ``inputs: {"$ref": "http://127.0.0.1:.../"}`` made the API process GET
that URL (jsonschema's default registry retrieves remote references; no egress policy saw it) and
answered 500; a subplan whose inputs schema referred to itself hung its run (every workflow task
failed with RecursionError); an OpenAPI document with ``servers: "x"`` or an operation's
``parameters: "abc"`` was a 500 on ``POST /v1/sources``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from referencing.exceptions import Unresolvable

from executor.lang.json_schema import schema_problem, validator
from executor.lang.validate import check_plan
from tools.egress import HttpPolicy
from tools.errors import ToolError
from tools.sources.catalog import SourceSpec
from tools.sources.openapi import openapi_catalog

CYCLE: dict[str, Any] = {"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}


class Recorder:
    """A local HTTP server that records every path asked and answers the JSON ``documents[path]``."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.documents: dict[str, Any] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.asked.append(self.path)
                body = json.dumps(recorder.documents.get(self.path, {"type": "string"})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.target = f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    served = Recorder()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


@pytest.mark.parametrize(
    ("schema", "pointer", "says"),
    [
        ({"$ref": "http://169.254.169.254/latest/meta-data"}, "/$ref", "not local"),
        ({"properties": {"a": {"$ref": "file:///etc/passwd"}}}, "/properties/a/$ref", "not local"),
        ({"$ref": "other.json"}, "/$ref", "not local"),
        ({"$ref": "#/$defs/Nope"}, "/$ref", "does not name a schema"),
        ({"properties": {"a": {"$id": "http://x/y"}}}, "/properties/a/$id", "only at the schema's root"),
        ({"$ref": "#"}, "", "cycle"),
        (CYCLE, "/$defs/A", "cycle"),
        ({"$defs": {"A": {"allOf": [{"$ref": "#/$defs/B"}]}, "B": {"not": {"$ref": "#/$defs/A"}}}}, "/$defs/", "cycle"),
    ],
    ids=["remote", "file", "relative", "dangling", "nested-id", "self", "defs-cycle", "allof-not-cycle"],
)
def test_a_schema_refers_only_inside_itself_and_without_endless_cycles(
    schema: dict[str, Any], pointer: str, says: str
) -> None:
    problem = schema_problem(schema)
    assert problem is not None and problem[0].startswith(pointer) and says in problem[1], problem


def test_recursive_schemas_that_descend_into_the_value_are_fine() -> None:
    tree = {
        "type": "object",
        "$defs": {"Node": {"properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "properties": {"root": {"$ref": "#/$defs/Node"}, "again": {"$ref": "#"}},
    }
    assert schema_problem(tree) is None
    assert [e.message for e in validator(tree).iter_errors({"root": {"kids": [{"kids": 1}]}})] == [
        "1 is not of type 'array'"
    ]


def test_validating_against_a_remote_ref_fetches_nothing(recorder: Recorder) -> None:
    with pytest.raises(Unresolvable):
        list(validator({"$ref": f"{recorder.origin}/schema.json"}).iter_errors("x"))
    assert recorder.asked == []


def test_plans_with_remote_or_cyclic_schemas_are_invalid_and_fetch_nothing(recorder: Recorder) -> None:
    remote = {"$ref": f"{recorder.origin}/inputs.json"}
    set_step = {"id": "a", "kind": "set", "value": 1}
    plans = {
        "/inputs/$ref": {"name": "p", "inputs": remote, "steps": [set_step]},
        "/steps/0/plan/inputs/$defs/A": {
            "name": "p",
            "steps": [
                {
                    "id": "sub",
                    "kind": "subplan",
                    "inputs": {},
                    "plan": {"name": "c", "inputs": CYCLE, "steps": [set_step]},
                }
            ],
        },
        "/steps/0/payload_schema/$ref": {
            "name": "p",
            "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "payload_schema": remote}],
        },
    }
    for pointer, plan in plans.items():
        _, issues = check_plan(plan)
        assert [(i.pointer, i.code) for i in issues] == [(pointer, "invalid_schema")], issues
    assert recorder.asked == []


async def test_malformed_openapi_documents_are_refused_or_their_operations_skipped(recorder: Recorder) -> None:
    base = {"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "servers": [{"url": recorder.origin}]}
    op = {"operationId": "ok"}
    recorder.documents = {
        "/servers.json": {**base, "servers": "x", "paths": {"/x": {"get": op}}},
        "/server-item.json": {**base, "servers": [5], "paths": {"/x": {"get": op}}},
        "/paths.json": {**base, "paths": [1, 2]},
        "/components.json": {**base, "components": {"schemas": [1]}, "paths": {}},
        "/deep.json": {**base, "paths": {"/x": {"get": {"x": json.loads("[" * 300 + "]" * 300)}}}},
        "/ops.json": {
            **base,
            "components": {
                "schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}
            },
            "paths": {
                "/x": {"get": op},
                "/p": {"get": {"operationId": "params", "parameters": "abc"}},
                "/q": {"get": {"operationId": "param", "parameters": [1]}},
                "/b": {"post": {"operationId": "body", "requestBody": "x"}},
                "/c": {
                    "post": {
                        "operationId": "cycle",
                        "requestBody": {
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}
                        },
                    }
                },
            },
        },
    }
    policy = HttpPolicy(allowed_private=frozenset({recorder.target}))

    async def catalog(path: str) -> Any:
        return await openapi_catalog(SourceSpec("svc", "openapi", recorder.origin + path), {}, policy, 0.0)

    refused = {
        "/servers.json": "servers must be an array",
        "/server-item.json": "servers/0 must be an object",
        "/paths.json": "paths must be an object",
        "/components.json": "components/schemas must be an object",
        "/deep.json": "nests more than",
    }
    for path, says in refused.items():
        with pytest.raises(ToolError) as caught:
            await catalog(path)
        assert caught.value.error_type == "OpenApiDocumentInvalid" and says in caught.value.message, caught.value
    listed = await catalog("/ops.json")
    assert [t.name for t in listed.tools] == ["svc.ok"]
    skipped = dict(s.split(": ", 1) for s in listed.skipped)
    assert set(skipped) == {"params", "param", "body", "cycle"}, skipped
    assert "cycle" in skipped["cycle"]


def test_patterns_match_in_linear_time_and_unsupported_ones_are_schema_problems() -> None:
    """``^(a+)+$`` against 26 characters took Python's backtracking ``re`` seconds of CPU (minutes at
    30): on the API's event loop, every tenant waited."""
    evil = {"type": "object", "properties": {"s": {"pattern": "^(a+)+$"}}, "patternProperties": {"^(b+)+$": {}}}
    started = time.process_time()
    errors = [e.message for e in validator(evil).iter_errors({"s": "a" * 26 + "!", "b" * 26 + "!": 1})]
    assert time.process_time() - started < 0.5
    assert errors == [f"'{'a' * 26}!' does not match '^(a+)+$'"]
    problem = schema_problem({"properties": {"s": {"pattern": "(?=a)b"}}})
    assert problem is not None and problem[0] == "/properties/s/pattern" and "RE2" in problem[1]
    _, issues = check_plan(
        {
            "name": "p",
            "inputs": {"patternProperties": {"(?<!x)y": {}}},
            "steps": [{"id": "a", "kind": "set", "value": 1}],
        }
    )
    assert [(i.pointer, i.code) for i in issues] == [("/inputs/patternProperties/(?<!x)y", "invalid_schema")]
