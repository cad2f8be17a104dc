"""Temporal's data converter, writing JSON as UTF-8 instead of ``\\uXXXX`` escapes.

Temporal's default JSON converter escapes every non-ASCII character (``é`` becomes six bytes), so
a payload's size in history was up to 6x its UTF-8 size, and a limit checked in UTF-8 bytes
could pass a payload that then broke Temporal's 2 MiB limit. Every duraplan client and worker
writes UTF-8 (decoding is the same either way, so histories written before still replay), and
every size limit counts UTF-8 bytes of the JSON: what history stores.
"""

from __future__ import annotations

import dataclasses
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
)

__all__ = ["UTF8_DATA_CONVERTER", "utf8_client"]


_FIELDS: dict[type, tuple[str, ...]] = {}


class _Utf8Encoder(AdvancedJSONEncoder):
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


class _Utf8PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            BinaryNullPayloadConverter(),
            BinaryPlainPayloadConverter(),
            JSONProtoPayloadConverter(),
            BinaryProtoPayloadConverter(),
            JSONPlainPayloadConverter(encoder=_Utf8Encoder),
        )


UTF8_DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=_Utf8PayloadConverter)


def utf8_client(client: Client) -> Client:
    """``client`` (same connection), writing payloads as UTF-8 JSON; itself if it already does."""
    if client.data_converter.payload_converter_class is _Utf8PayloadConverter:
        return client
    config = client.config()
    config["data_converter"] = UTF8_DATA_CONVERTER
    return Client(**config)
