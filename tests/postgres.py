"""A throwaway PostgreSQL cluster on 127.0.0.1, from Debian's `postgresql` programs: for the tests and bench/."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url


def _bin(program: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}")) or [shutil.which(program) or ""]
    if not found[-1]:
        raise RuntimeError(f"{program} not found: install Debian's postgresql (scripts/setup.sh --test does)")
    return found[-1]


@contextmanager
def local_postgres(port: int, database: str = "prefect") -> Iterator[str]:
    """Start a cluster in a temporary folder, create `database`, and yield its SQLAlchemy URL for Prefect
    (`postgresql+asyncpg://granary@127.0.0.1:PORT/DATABASE`). The cluster and its folder are removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="granary-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        os.chown(sockets, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, text=True)

    run(_bin("initdb"), "-D", str(data), "-U", "granary", "--auth=trust", "--encoding=UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run(_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "postgres.log"), "-w", "start")
    try:
        run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "granary", database)
        yield f"postgresql+asyncpg://granary@127.0.0.1:{port}/{database}"
    finally:
        run(_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def query(url: str, sql: str) -> str:
    """One value from `psql` against the cluster `url` names."""
    parts = make_url(url)
    address = ["-h", str(parts.host), "-p", str(parts.port), "-U", str(parts.username), "-d", str(parts.database)]
    result = subprocess.run(
        [_bin("psql"), *address, "-tAc", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()
