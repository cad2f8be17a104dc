"""Temporal's data converter, writing JSON as UTF-8 instead of ``\\uXXXX`` escapes.

Temporal's default JSON converter escapes every non-ASCII character (``é`` becomes six bytes), so
a payload's size in history was up to 6x its UTF-8 size, and a limit checked in UTF-8 bytes
could pass a payload that then broke Temporal's 2 MiB limit. Every duraplan client and worker
writes UTF-8 (decoding is the same either way, so histories written before still replay), and
every size limit counts UTF-8 bytes of the JSON: what history stores.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.converter import (
    AdvancedJSONEncoder,
    BinaryNullPayloadConverter,
    BinaryPlainPayloadConverter,
    BinaryProtoPayloadConverter,
    CompositePayloadConverter,
    DataConverter,
    JSONPlainPayloadConverter,
    JSONProtoPayloadConverter,
    JSONTypeConverter,
    value_to_type,
)
from temporalio.converter import JSONTypeConverterUnhandled as Unhandled

__all__ = ["UTF8_DATA_CONVERTER", "Utf8Encoder", "utf8_client", "writes_utf8_json"]


_FIELDS: dict[type, tuple[str, ...]] = {}


class Utf8Encoder(AdvancedJSONEncoder):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["ensure_ascii"] = False
        super().__init__(**kwargs)

    def default(self, o: Any) -> Any:
        # A dataclass as a shallow dict: the encoder comes back here for the dataclasses inside it.
        # The base class's ``dataclasses.asdict`` deep-copies every value first (a run's whole plan,
        # on every start and every activity input) only for the encoder to walk it again.
        names = _FIELDS.get(type(o))
        if names is None and dataclasses.is_dataclass(o) and not isinstance(o, type):
            names = _FIELDS[type(o)] = tuple(f.name for f in dataclasses.fields(o))
        if names is not None:
            return {name: getattr(o, name) for name in names}
        return super().default(o)


_NOT_PLAIN = object()  # a value the quick check does not take: value_to_type decides (and words any error)
_PLAIN: dict[Any, type] = {str: str, int: int, bool: bool, float: float}


def _plain_check(hint: Any) -> Callable[[Any], Any] | None:
    """For a field hint whose JSON value needs no conversion (a string, a number, a flag, a JSON
    object or list of them): a check returning the value itself when it is exactly what
    ``value_to_type`` would return (the same value, an equal copy for a container), else
    ``_NOT_PLAIN``. None for any other hint.

    Why: inside the workflow sandbox every ``isinstance`` is a wrapped Python call, and the SDK's
    ``value_to_type`` makes several per field and per list item, so decoding a run's input
    (``RunInput``, every run's first activation) cost more than the rest of that activation."""
    if hint is Any:
        return lambda v: v
    exact = _PLAIN.get(hint)
    if exact is not None:
        return lambda v: v if type(v) is exact else _NOT_PLAIN
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        inner = _plain_check(other)
        if inner is not None:
            return lambda v: None if v is None else inner(v)
        if dataclasses.is_dataclass(other):  # (it refuses None: the union's None is the answer)
            return lambda v: None if v is None else _NOT_PLAIN
        return None
    if origin is dict and len(args) == 2 and args[0] is str and (args[1] is Any or args[1] is str):
        any_value = args[1] is Any

        def json_object(v: Any) -> Any:
            if type(v) is not dict:
                return _NOT_PLAIN
            for k, item in v.items():
                if type(k) is not str or not (any_value or type(item) is str):
                    return _NOT_PLAIN
            return v  # json.loads' own dict, held by nothing else: no copy needed

        return json_object
    if origin is list and len(args) == 1:
        if args[0] is str:
            return lambda v: v if type(v) is list and all(type(x) is str for x in v) else _NOT_PLAIN
        return lambda v: v if type(v) is list and not v else _NOT_PLAIN  # empty: nothing to convert
    return None


@functools.lru_cache(maxsize=1024)
def _field_plan(cls: type) -> tuple[tuple[str, Any, bool, Callable[[Any], Any] | None], ...]:
    """(name, type hint, init, quick check) per field. ``typing.get_type_hints`` re-evaluates every
    string annotation (``from __future__ import annotations``: all of ours) on each call, and the
    SDK calls it on every decode of a dataclass: a run's input and every activity result."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name], f.init, _plain_check(hints[f.name])) for f in dataclasses.fields(cls))


class _CachedDataclasses(JSONTypeConverter):
    """The SDK's dataclass decoding (``value_to_type``), with each class's field hints cached."""

    def __init__(self) -> None:
        self.chain: Sequence[JSONTypeConverter] = (self,)

    def to_typed_value(self, hint: type, value: Any) -> Any | Unhandled | None:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return JSONTypeConverter.Unhandled
        if not isinstance(value, dict):
            raise TypeError(f"Cannot convert to dataclass {hint}, value is {type(value)} not dict")
        init: dict[str, Any] = {}
        later: dict[str, Any] = {}
        for name, field_hint, in_init, plain in _field_plan(hint):
            field_value = value.get(name, dataclasses.MISSING)
            if field_value is dataclasses.MISSING:
                continue  # a missing required field fails at instantiation, as in the SDK
            converted = _NOT_PLAIN if plain is None else plain(field_value)
            if converted is _NOT_PLAIN:
                try:
                    converted = value_to_type(field_hint, field_value, self.chain)
                except Exception as err:
                    raise TypeError(f"Failed converting field {name} on dataclass {hint}") from err
            (init if in_init else later)[name] = converted
        obj = hint(**init)
        for name, converted in later.items():  # init=False fields, restored as the SDK does
            object.__setattr__(obj, name, converted)
        return obj


# Stateless, so built once: the worker builds a new data converter, and so a new payload
# converter, for every workflow activation.
_PARTS = (
    BinaryNullPayloadConverter(),
    BinaryPlainPayloadConverter(),
    JSONProtoPayloadConverter(),
    BinaryProtoPayloadConverter(),
    JSONPlainPayloadConverter(encoder=Utf8Encoder, custom_type_converters=[_CachedDataclasses()]),
)


class _Utf8PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(*_PARTS)


UTF8_DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=_Utf8PayloadConverter)


def writes_utf8_json(client: Client) -> bool:
    """Whether ``client`` converts values to payloads with duraplan's converter (a codec may follow)."""
    return client.data_converter.payload_converter_class is _Utf8PayloadConverter


def utf8_client(client: Client) -> Client:
    """``client`` (same connection), writing payloads as UTF-8 JSON; itself if it already does."""
    if writes_utf8_json(client):
        return client
    config = client.config()
    config["data_converter"] = UTF8_DATA_CONVERTER
    return Client(**config)
