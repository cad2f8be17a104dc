"""How duraplan's command-line entry points end their process.

They end with ``os._exit`` once output is flushed: the Temporal runtime's native threads can crash
the interpreter while it finalizes (seen as SIGSEGV after a clean run), and nothing is left to
clean up by then. Tests that call a CLI app in-process set ``DURAPLAN_CLI_IN_PROCESS`` and get a
``typer.Exit`` instead.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

__all__ = ["exit_process"]


def exit_process(code: int) -> NoReturn:
    telemetry = sys.modules.get("executor.service.telemetry")
    if telemetry is not None:  # not loaded: no tracing was set up (and opentelemetry stays unloaded)
        telemetry.flush_tracing()  # queued spans would die with the process
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get("DURAPLAN_CLI_IN_PROCESS"):  # tests that call the app in-process
        raise typer.Exit(code)
    os._exit(code)
