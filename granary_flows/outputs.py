"""What a container wrote into its output folder, read without trusting it: only regular files it wrote there.

The runner reads the folder with its own rights, so a symbolic link (to `/etc/shadow`, or to the runner's own
`/proc/self/environ`), a device or a FIFO in it is never followed or read: it is left out and said in a warning. So is
a file named as one of the runner's own documents (it may not pose as them) or with a name that is not UTF-8. The
outputs together may not exceed the operator's caps on their size and their number. A Batch job writes its outputs to
the store itself: `kept_outputs` applies the same rules to what it wrote there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from granary_flows.errors import ErrorCategory, ExecutionFailed
from granary_flows.layout import is_runner_document

if TYPE_CHECKING:
    from granary_flows.policy import Policy
    from granary_flows.store import StoredOutputs


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


def written_files(folder: Path, policy: Policy) -> Written:
    """The regular files under `folder`, walked without following any link.

    Raises:
        ExecutionFailed: a `system` error naming the cap, when the files exceed the policy's size or count.
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
            if not _utf8(relative):
                shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                written.warnings.append(f"output {shown!r} has a name that is not UTF-8: it was not kept")
            elif stat.S_ISDIR(mode):
                pending.append((Path(entry.path), f"{relative}/"))
            elif stat.S_ISREG(mode):
                if is_runner_document(relative):
                    written.warnings.append(f"output {relative} is named as the runner's own document: not kept")
                    continue
                size = entry.stat(follow_symlinks=False).st_size
                written.files.append(WrittenFile(path=Path(entry.path), relative=relative, size=size))
                _within_caps(len(written.files), written.size, policy)
            else:
                written.warnings.append(f"output {relative} is {_kind(mode)}, not a regular file: it was not kept")
    written.files.sort(key=lambda file: file.relative)
    return written


def kept_outputs(stored: StoredOutputs, policy: Policy) -> tuple[StoredOutputs, list[str], list[str]]:
    """What a job wrote to the store itself, under the same rules: the outputs kept, the paths to remove (named as
    the runner's own documents), and the warnings.

    Raises:
        ExecutionFailed: a `system` error naming the cap, when the outputs exceed the policy's size or count.
    """
    from granary_flows.store import StoredOutputs

    forged = sorted(relative for relative in stored.uris if is_runner_document(relative))
    kept = StoredOutputs(
        uris={k: v for k, v in stored.uris.items() if k not in forged},
        sizes={k: v for k, v in stored.sizes.items() if k not in forged},
    )
    _within_caps(len(kept.uris), sum(kept.sizes.values()), policy)
    warnings = [f"output {relative} is named as the runner's own document: not kept" for relative in forged]
    return kept, forged, warnings


def _within_caps(count: int, size: int, policy: Policy) -> None:
    if size > policy.max_output_bytes:
        raise ExecutionFailed(
            f"the outputs exceed {policy.max_output_mib:g} MiB, the most an execution may write "
            "(GRANARY_MAX_OUTPUT_MIB)",
            ErrorCategory.SYSTEM,
        )
    if count > policy.max_output_files:
        raise ExecutionFailed(
            f"the outputs are more than {policy.max_output_files:,} files, the most an execution may write "
            "(GRANARY_MAX_OUTPUT_FILES)",
            ErrorCategory.SYSTEM,
        )


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
