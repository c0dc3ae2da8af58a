"""The keys granary signs with, in one Prefect Secret block (`granary-keys`): readable only by who holds Prefect's
credential, which is who administers granary anyway. `granary api` makes them when it first starts; runners read them
to sign the links they put in Prefect's UI and the webhook URLs they give jobs.

- `signing` signs result links, the API's sign-in sessions and webhook ids. `granary keys rotate` replaces it: links
  signed before stop opening by themselves (whoever may see the job signs in and lands on the file), everyone signed
  in to the API signs in again, and jobs running then keep their webhooks (the previous key still opens those alone).
- `owner` marks the runs the API created for a user (`provenance`). It is never rotated: a new one would leave every
  earlier job to the admin alone.

Each process reads the block at most every KEYS_TTL seconds, so that a rotation reaches every runner and API. The
block is read and written off any event loop's thread: there, Prefect's `load` and `save` hand back a coroutine.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TypeVar

from pydantic import BaseModel, SecretStr

KEYS_BLOCK = "granary-keys"
KEYS_TTL = 30.0
Result = TypeVar("Result")


class Keys(BaseModel):
    """The keys of one installation (see the module's docstring)."""

    signing: str
    previous: str | None = None
    owner: str
    rotated: datetime | None = None

    def sign(self, purpose: str, *parts: str) -> str:
        """An HMAC of `parts` for `purpose` with the signing key; the parts are joined so that none can pose as two.

        Example:
            >>> keys = Keys(signing="k", owner="o")
            >>> keys.sign("output", "job", "a.tif") == keys.sign("output", "job", "a.tif")
            True
            >>> keys.sign("output", "job", "a.tif") == keys.sign("output", "jo", "ba.tif")
            False
        """
        return _mac(self.signing, purpose, parts)

    def signatures(self, purpose: str, *parts: str, previous: bool = False) -> list[str]:
        """The signing key's signature of `parts`, and with `previous` the one of the key it replaced."""
        keys = [self.signing, *([self.previous] if previous and self.previous else [])]
        return [_mac(key, purpose, parts) for key in keys]

    def holds(self, signature: str, purpose: str, *parts: str) -> bool:
        """Whether `signature` is the signing key's for `parts`, in constant time."""
        return same(self.sign(purpose, *parts), signature)

    def owner_mark(self, subject: str) -> str:
        return _mac(self.owner, "owner", (subject,))[:32]


def _mac(key: str, purpose: str, parts: tuple[str, ...]) -> str:
    message = "\x1f".join((purpose, *(f"{len(part)}:{part}" for part in parts)))
    return hmac.new(key.encode(), message.encode(errors="surrogatepass"), hashlib.sha256).hexdigest()


def same(expected: str, given: str) -> bool:
    """Whether a caller's signature or id is the expected one, in constant time; bytes, so that any text compares."""
    return hmac.compare_digest(expected.encode(errors="surrogatepass"), given.encode(errors="surrogatepass"))


def new_keys() -> Keys:
    return Keys(signing=secrets.token_hex(32), owner=secrets.token_hex(32))


_cache: dict[str, tuple[float, Keys]] = {}
_lock = threading.Lock()


def current_keys(create: bool = False) -> Keys | None:
    """This installation's keys, read from Prefect at most every KEYS_TTL seconds; with `create`, made when there are
    none yet. None when there are none (no API has started)."""
    with _lock:
        cached = _cache.get("keys")
        if cached and time.monotonic() - cached[0] < KEYS_TTL:
            return cached[1]
        keys = _off_the_loop(lambda: _read() or (_create() if create else None))
        if keys is not None:
            _cache["keys"] = (time.monotonic(), keys)
        return keys


def _off_the_loop(call: Callable[[], Result]) -> Result:
    """`call()`, in a thread of its own when this thread runs an event loop (an async route of the API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(1, thread_name_prefix="granary-keys") as pool:
        return pool.submit(call).result()


def rotate() -> Keys:
    """A new signing key; the one it replaces opens the webhooks of jobs running now, and nothing else."""
    from prefect.blocks.system import Secret

    with _lock:
        old = _read() or new_keys()
        keys = Keys(
            signing=secrets.token_hex(32), previous=old.signing, owner=old.owner, rotated=datetime.now(timezone.utc)
        )
        Secret(value=SecretStr(keys.model_dump_json())).save(KEYS_BLOCK, overwrite=True)
        _cache["keys"] = (time.monotonic(), keys)
        return keys


def _read() -> Keys | None:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(KEYS_BLOCK).get()  # type: ignore[union-attr]
    except ValueError:  # no such block
        return None
    return Keys.model_validate(value) if isinstance(value, dict) else Keys.model_validate_json(str(value))


def _create() -> Keys:
    """New keys, unless another process made them meanwhile: then theirs."""
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectAlreadyExists

    keys = new_keys()
    try:
        Secret(value=SecretStr(keys.model_dump_json())).save(KEYS_BLOCK, overwrite=False)
    except (ObjectAlreadyExists, ValueError):
        return _read() or keys
    return keys
