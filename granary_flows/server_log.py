"""The log of every Prefect server granary starts: its output goes to a file named when it starts
(`$GRANARY_HOME/logs/prefect-server-<port>.log` by default), rotated at ROTATE_BYTES with KEPT older files, so that a
stall or a `database is locked` can be read afterwards and the log never fills the disk.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO, NoReturn

from granary_flows.layout import home

ROTATE_BYTES = 10 * 2**20
KEPT = 5


def server_log_path(port: int | str, what: str = "prefect-server") -> Path:
    """Where a server's log goes by default.

    Example:
        >>> server_log_path(4200).name
        'prefect-server-4200.log'
    """
    return home() / "logs" / f"{what}-{port}.log"


def exec_with_log(command: list[str], environment: dict[str, str], path: Path) -> NoReturn:
    """Become `command` (the server: signals reach it as they would have reached this process), its output going to
    this terminal and to the rotating log at `path` through a small writer process of its own, which ends when the
    server's output does, however the server ends (a SIGKILL included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # forks the writer and leaves at once, so that the writer is nobody's child to reap
        if os.fork() == 0:
            os.close(writing)
            for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C reaches the whole group: keep the last lines
                signal.signal(signum, signal.SIG_IGN)
            _write_log(os.fdopen(reading, "rb"), path, os.fdopen(os.dup(1), "w"))
        os._exit(0)
    os.waitpid(child, 0)
    os.close(reading)
    os.dup2(writing, 1)
    os.dup2(writing, 2)
    os.close(writing)
    os.execve(command[0], command, environment)


def _write_log(output: IO[bytes], path: Path, echo: IO[str] | None) -> None:
    handler = RotatingFileHandler(path, maxBytes=ROTATE_BYTES, backupCount=KEPT, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for raw in iter(output.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            handler.emit(logging.makeLogRecord({"msg": line}))
            if echo is not None:
                try:
                    echo.write(line + "\n")
                    echo.flush()
                except OSError:  # nobody reads the terminal any more: the log goes on
                    echo = None
    finally:
        handler.close()


def follow(process: subprocess.Popen[bytes], path: Path, echo: IO[str] | None = None) -> threading.Thread:
    """Write what `process` prints (its stdout, with stderr sent there) to the rotating log at `path`, and to `echo`
    too when given, from a thread of its own that ends with the process's output.

    Returns:
        The thread.
    """
    if process.stdout is None:
        raise ValueError("the process must be started with stdout=subprocess.PIPE")
    path.parent.mkdir(parents=True, exist_ok=True)
    thread = threading.Thread(
        target=_write_log, args=(process.stdout, path, echo), name=f"granary-server-log-{process.pid}", daemon=True
    )
    thread.start()
    return thread
