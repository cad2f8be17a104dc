"""What a tool source is and what it offers: specs, catalog entries, hashes and header templates.

A *source* is a tenant's MCP server (streamable HTTP, or stdio where the operator allows it) or
HTTP service described by OpenAPI. Its tools enter the tenant's catalog as ``<source>.<tool>``
with the server's JSON Schema, description and hints. Every entry carries ``schema_hash``: the
hash of what a plan relies on (remote name, schema, side effects, call route). A run pins the
hashes of the source tools its plan uses; a call whose entry hash no longer matches fails with
``ToolSchemaChanged`` instead of sending arguments shaped for another schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import jsonschema

from executor.lang.json_schema import schema_problem
from tools.errors import ToolError
from tools.registry import TOOL_NAME_PATTERN

__all__ = [
    "SOURCE_NAME_PATTERN",
    "Catalog",
    "CatalogTool",
    "SourceError",
    "SourceKind",
    "SourceSpec",
    "canonical_hash",
    "header_secrets",
    "local_name",
    "render_headers",
]

SourceKind = Literal["mcp", "mcp_stdio", "openapi"]
# The prefix of a source's tools: one lower-case segment, like a built-in family ("kv", "http").
SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# "Bearer {$secret: GH_TOKEN}": the secret's value replaces the placeholder inside the activity.
_SECRET_REF = re.compile(r"\{\s*\$secret\s*:\s*([A-Za-z_][A-Za-z0-9_.-]{0,127})\s*\}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
MAX_TOOLS_PER_SOURCE = 500
MAX_SCHEMA_BYTES = 64 * 1024  # every schema goes into the planner's prompt


class SourceError(ToolError):
    """A source could not be reached, listed or understood; ``error_type`` says which."""


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def local_name(remote: str) -> str:
    """A remote tool name spelled as a duraplan name segment (``Create-Issue`` -> ``create_issue``)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", remote)
    name = re.sub(r"[^a-z0-9_]+", "_", spaced.lower()).strip("_")
    return name if name and name[0].isalpha() else f"t_{name}"


def header_secrets(headers: dict[str, str]) -> list[str]:
    """The secret names the header templates refer to."""
    return sorted({m.group(1) for v in headers.values() for m in _SECRET_REF.finditer(v)})


def render_headers(headers: dict[str, str], secret: Callable[[str], str]) -> tuple[dict[str, str], list[str]]:
    """Header values with ``{$secret: NAME}`` replaced; also the secret values used (to redact)."""
    used: list[str] = []

    def fill(match: re.Match[str]) -> str:
        value = secret(match.group(1))
        used.append(value)
        return value

    return {k: _SECRET_REF.sub(fill, v) for k, v in headers.items()}, used


@dataclass(frozen=True)
class SourceSpec:
    """How to reach one source. Header values may hold ``{$secret: NAME}``; never a secret itself."""

    name: str
    kind: SourceKind
    url: str | None = None  # the MCP endpoint, or the OpenAPI document
    command: tuple[str, ...] = ()  # mcp_stdio: the server's argv
    headers: dict[str, str] = field(default_factory=dict)
    base_url: str | None = None  # openapi: where operations go (default: the document's servers[0])
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not SOURCE_NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"source name {self.name!r} must match {SOURCE_NAME_PATTERN.pattern}")
        if self.kind not in ("mcp", "mcp_stdio", "openapi"):
            raise ValueError(f"source kind {self.kind!r} must be mcp, mcp_stdio or openapi")
        if self.kind == "mcp_stdio":
            if not self.command or self.url:
                raise ValueError(f"source {self.name!r}: a stdio MCP source needs a command and no URL")
        elif not self.url or self.command:
            raise ValueError(f"source {self.name!r}: an {self.kind} source needs a URL and no command")
        if self.url is not None and not re.match(r"^https?://", self.url, re.IGNORECASE):
            raise ValueError(f"source {self.name!r}: URL {self.url!r} must be http:// or https://")
        for key, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(key) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"source {self.name!r}: header {key!r} is not a valid header")
        if not 0 < self.timeout_s <= 600:
            raise ValueError(f"source {self.name!r}: timeout_s must be in (0, 600]")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["command"] = list(self.command)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceSpec:
        return cls(**{**data, "command": tuple(data.get("command") or ()), "headers": dict(data.get("headers") or {})})

    @property
    def spec_hash(self) -> str:
        return canonical_hash(self.to_dict())


@dataclass(frozen=True)
class CatalogTool:
    """One tool of a source as the planner sees it, plus how to call it."""

    name: str  # "<source>.<local name>"
    remote: str  # the MCP tool name, or the OpenAPI operationId
    description: str
    args_schema: dict[str, Any]
    side_effects: bool
    annotations: dict[str, Any] = field(default_factory=dict)
    # openapi: {"method", "path", "params": {name: "path"|"query"|"header"}, "body": bool}
    route: dict[str, Any] = field(default_factory=dict)
    schema_hash: str = ""

    @classmethod
    def build(cls, source: str, remote: str, description: str, schema: dict[str, Any], **rest: Any) -> CatalogTool:
        name = f"{source}.{local_name(remote)}"
        if not TOOL_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"tool {remote!r} of source {source!r} has no usable name")
        try:
            size = len(json.dumps(schema))
        except (TypeError, ValueError, RecursionError):
            raise ValueError("its argument schema is not JSON (or nests too deep)") from None
        if size > MAX_SCHEMA_BYTES:
            raise ValueError(f"its argument schema is larger than {MAX_SCHEMA_BYTES} bytes")
        problem = schema_problem(schema)
        if problem is not None:
            raise ValueError(
                f"its argument schema{' at ' + problem[0] if problem[0] else ''} is not usable: {problem[1]}"
            )
        side_effects = bool(rest.get("side_effects", True))
        route = dict(rest.get("route") or {})
        digest = canonical_hash({"remote": remote, "schema": schema, "side_effects": side_effects, "route": route})
        return cls(name, remote, description, schema, side_effects, dict(rest.get("annotations") or {}), route, digest)

    def entry(self, source: str, kind: str) -> dict[str, Any]:
        """The ``ToolRegistry.catalog()``-shaped entry, with where the tool comes from."""
        return {
            "name": self.name,
            "description": self.description,
            "args_schema": self.args_schema,
            "side_effects": self.side_effects,
            "source": source,
            "source_kind": kind,
            "remote": self.remote,
            "annotations": self.annotations,
            "schema_hash": self.schema_hash,
        }


@dataclass(frozen=True)
class Catalog:
    """A source's tools as fetched at ``fetched_at``; ``hash`` covers every entry's hash."""

    source: str
    tools: tuple[CatalogTool, ...]
    fetched_at: float
    skipped: tuple[str, ...] = ()  # remote tools left out, each with why

    @property
    def hash(self) -> str:
        return canonical_hash(sorted(t.schema_hash for t in self.tools))

    def get(self, name: str) -> CatalogTool | None:
        return next((t for t in self.tools if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fetched_at": self.fetched_at,
            "skipped": list(self.skipped),
            "tools": [asdict(t) for t in self.tools],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        tools = tuple(CatalogTool(**t) for t in data["tools"])
        return cls(data["source"], tools, float(data["fetched_at"]), tuple(data.get("skipped") or ()))


def unique_tools(
    source: str, candidates: Iterable[tuple[str, Callable[[], CatalogTool]]]
) -> tuple[tuple[CatalogTool, ...], tuple[str, ...]]:
    """Build each candidate; keep the first of clashing names and report the rest as skipped."""
    tools: dict[str, CatalogTool] = {}
    skipped: list[str] = []
    for remote, build in candidates:
        if len(tools) >= MAX_TOOLS_PER_SOURCE:
            skipped.append(f"{remote}: more than {MAX_TOOLS_PER_SOURCE} tools")
            continue
        try:
            tool = build()
        except Exception as exc:  # a server's description of one tool, in any shape: skip that tool only
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            reason = (
                text
                if isinstance(exc, ValueError | jsonschema.SchemaError)
                else f"unusable ({type(exc).__name__}: {text})"
            )
            skipped.append(f"{remote}: {reason}")
            continue
        if tool.name in tools:
            skipped.append(f"{remote}: its name {tool.name!r} clashes with {tools[tool.name].remote!r}")
            continue
        tools[tool.name] = tool
    return tuple(sorted(tools.values(), key=lambda t: t.name)), tuple(skipped)
