"""Plan format v1: the pydantic model and the committed JSON Schema generated from it."""

from schemas.plan import Plan, Step, parse_duration

__all__ = ["Plan", "Step", "parse_duration"]
