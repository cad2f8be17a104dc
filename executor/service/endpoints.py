"""Where Temporal's HTTP API is, for clients that use it instead of the SDK (the CLI).

In order: ``DURAPLAN_HTTP_ADDRESS`` (``Settings.http_address``), unless the command names another
Temporal with ``--address``; else the record the embedded dev server (``duraplan dev``,
``executor.service.devserver``) keeps in ``<home>/devserver.json`` while it runs, when it is the
Temporal the settings point at. None: no HTTP endpoint is known, and the client uses the SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.service.config import Settings

__all__ = ["DEV_RECORD", "http_address", "remove_dev_record", "write_dev_record"]

DEV_RECORD = "devserver.json"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}  # urlsplit's hostname drops the brackets


def write_dev_record(home: Path, *, address: str, namespace: str, http_api: str, ui_api: str | None) -> None:
    """Record a running dev server: its gRPC address, namespace and HTTP API addresses.

    ``ui_api`` (the UI server's ``/api/v1``) routes every call duraplan makes; ``http_api`` (the
    frontend's HTTP port) only listings (see ``executor.service.temporal_http``)."""
    record = {"address": address, "namespace": namespace, "http_api": http_api, "ui_api": ui_api, "pid": os.getpid()}
    path = home / DEV_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def remove_dev_record(home: Path, address: str) -> None:
    """Remove the record if this process wrote it for the server at ``address``."""
    path = home / DEV_RECORD
    with contextlib.suppress(OSError, ValueError, AttributeError):
        record = json.loads(path.read_text())
        if record.get("pid") == os.getpid() and record.get("address") == address:
            path.unlink()


def http_address(settings: Settings, *, address_given: bool = False) -> str | None:
    """The HTTP API to use for ``settings``' Temporal, or None. ``address_given``: the command named
    its Temporal itself (``--address``), so a configured HTTP address may be another server's."""
    if settings.http_address and not address_given:
        return settings.http_address
    record = _dev_record(settings.home)
    if record is None or record.get("namespace") != settings.namespace:
        return None
    here = _normal(settings.address)
    if here is None or _normal(str(record.get("address", ""))) != here:
        return None
    url = record.get("ui_api") or record.get("http_api")
    # A dev server is this machine's: a record naming anything else (which would be sent the API
    # key) is not one duraplan wrote.
    if not isinstance(url, str) or urllib.parse.urlsplit(url).hostname not in _LOOPBACK:
        return None
    return url


def _dev_record(home: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((home / DEV_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _normal(address: str) -> str | None:
    """``host:port`` of a loopback address, every spelling as one; None for any other host."""
    host, _, port = address.rpartition(":")
    return f"loopback:{port}" if host in _LOOPBACK else None
