"""Throwaway PostgreSQL clusters from Debian's binaries, for tests: initdb in a temporary directory (as the
`postgres` user when running as root: initdb refuses root), on a free port on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.servers import free_port

BIN = Path(os.environ.get("SOMNER_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (BIN / "initdb").exists() and (os.geteuid() != 0 or shutil.which("runuser") is not None)


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresCluster:
    def __init__(self) -> None:
        if not available():
            pytest.skip(f"PostgreSQL binaries not found in {BIN} (install Debian's postgresql-15)")
        # Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
        self.base = Path(tempfile.mkdtemp(prefix="somner-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        subprocess.run(
            _as_postgres([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        self._databases = 0

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        self._databases += 1
        name = f"somner_test_{self._databases}"
        for _ in range(50):
            result = subprocess.run(
                ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f"CREATE DATABASE {name}"],
                capture_output=True,
                check=False,
            )
            if result.returncode == 0:
                return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"
            time.sleep(0.1)
        raise RuntimeError(f"cannot create a database: {result.stderr.decode()}")

    def dump(self, url: str) -> str:
        name = url.rsplit("/", 1)[-1]
        return subprocess.run(
            [str(BIN / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
