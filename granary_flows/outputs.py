"""What a container wrote into its output folder, read without trusting it: only regular files it wrote there.

The runner reads the folder with its own rights, so a symbolic link (to `/etc/shadow`, or to the runner's own
`/proc/self/environ`), a device or a FIFO in it is never followed or read: it is left out and said in a warning. The
outputs together may not exceed the operator's cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel

from granary_flows.errors import ErrorCategory, ExecutionFailed


class WrittenFile(BaseModel):
    """One regular file in the output folder."""

    path: Path
    relative: str
    size: int


class Written(BaseModel):
    files: list[WrittenFile] = []
    warnings: list[str] = []

    @property
    def size(self) -> int:
        return sum(file.size for file in self.files)


def written_files(folder: Path, cap: int) -> Written:
    """The regular files under `folder`, walked without following any link.

    Raises:
        ExecutionFailed: a `system` error naming the cap, when the files together exceed `cap` bytes.
    """
    written = Written()
    pending = [(folder, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as err:
            written.warnings.append(f"output folder {prefix or '.'} could not be read: {err.strerror}")
            continue
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                pending.append((Path(entry.path), f"{relative}/"))
            elif stat.S_ISREG(mode):
                size = entry.stat(follow_symlinks=False).st_size
                written.files.append(WrittenFile(path=Path(entry.path), relative=relative, size=size))
                if written.size > cap:
                    raise ExecutionFailed(
                        f"the outputs exceed {cap / 2**20:g} MiB, the most an execution may write "
                        "(GRANARY_MAX_OUTPUT_MIB)",
                        ErrorCategory.SYSTEM,
                    )
            else:
                written.warnings.append(f"output {relative} is {_kind(mode)}, not a regular file: it was not kept")
    written.files.sort(key=lambda file: file.relative)
    return written


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"
