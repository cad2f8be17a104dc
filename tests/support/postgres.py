"""A throwaway PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` in a temp dir, on a free port.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it). PostgreSQL refuses
to run as root, so as root the cluster belongs to the package's ``postgres`` user and every
command runs through ``runuser``. The server listens on 127.0.0.1 only, with ``trust`` auth and
no fsync: it holds nothing worth keeping. Each test gets a fresh schema (``fresh_url``), so tests
sharing the server never see each other's tables.

``initdb`` takes seconds on a busy machine, so its result is kept in the temp dir as a template
(built aside, then renamed into place, so a half-built one is never used) and each server starts
from a copy of it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

__all__ = ["PostgresServer"]

USER = "duraplan"
OS_USER = "postgres"  # Debian's package creates it


def _bindir() -> Path:
    override = os.environ.get("DURAPLAN_PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: apt-get install -y postgresql (.ci/run does), "
        "or set DURAPLAN_PG_BINDIR to the directory holding initdb and pg_ctl"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self._bin = _bindir()
        self._as_root = os.geteuid() == 0
        # Not under pytest's tmp dirs: those are 0700 root, and the server runs as `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="duraplan-pg-"))
        if self._as_root:
            shutil.chown(self.root, OS_USER)
        self.data = self.root / "data"
        self.port = 0

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self._bin / tool) if "/" not in tool and (self._bin / tool).exists() else tool, *args]
        if self._as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def _template(self) -> Path:
        initdb = self._bin / "initdb"
        key = hashlib.sha256(f"{initdb}:{initdb.stat().st_mtime}:{USER}:{os.geteuid()}".encode()).hexdigest()[:12]
        template = Path(tempfile.gettempdir()) / f"duraplan-pg-template-{key}"
        if not (template / "PG_VERSION").exists():
            build = self.root / "template"
            self._run("initdb", "-D", str(build), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
            try:
                os.rename(build, template)
            except OSError:  # another test process put one there first
                shutil.rmtree(build, ignore_errors=True)
        return template

    def start(self) -> PostgresServer:
        self._run("cp", "-a", str(self._template()), str(self.data))
        for attempt in range(3):  # a port picked as free can be taken before the server binds it
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB"
            )
            try:
                log = str(self.root / "server.log")
                self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        try:
            if self.port:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def fresh_url(self) -> str:
        """A URL whose tables land in a new, empty schema (via ``search_path``)."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.admin_url}?options={quote(f'-csearch_path={schema}')}"
