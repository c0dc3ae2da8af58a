"""Secrets never leave masked: every line, message and document a person can read goes through a `Masker`.

The masking is structural: an execution makes its masker current (`masking`) for everything it does, and what leaves
it passes through that masker in one place each: every log record created meanwhile (`install_log_masking`: the
run's logs, Prefect's own engine lines, the runner's console), every artifact (`artifacts`), the exception that ends
the run (`flows`), the documents written beside the outputs and the outputs' names (`execution`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel

MASK = "****"
ModelT = TypeVar("ModelT", bound=BaseModel)
_CREDENTIALS_IN_URI = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


class Masker:
    """Replaces secret values (and credentials written into URIs) wherever text shows them.

    Example:
        >>> Masker(["s3cr3t"]).text("token s3cr3t from https://ada:pw@example.com/x")
        'token **** from https://****@example.com/x'
    """

    def __init__(self, secrets: list[str] | None = None):
        self.secrets: list[str] = []
        self.add(secrets or [])

    def add(self, secrets: list[str]) -> None:
        """Mask these too, from now on (a masker is shared by reference: every holder sees them)."""
        # Longest first, so that a secret containing another is masked whole.
        found = {s for s in [*self.secrets, *secrets] if s and len(s) >= 3}
        self.secrets = sorted(found, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, MASK)
        return _CREDENTIALS_IN_URI.sub(lambda m: f"{m.group('scheme')}{MASK}@", value)

    def model(self, value: ModelT) -> ModelT:
        """A copy of a pydantic model with every string of it masked."""
        return type(value).model_validate(self.document(value.model_dump(mode="json")))

    def document(self, value: Any) -> Any:
        """A JSON-like value with every string masked (keys included); the input is not changed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)) if isinstance(k, str) else k: self.document(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.document(item) for item in value]
        return value


_current: ContextVar[Masker | None] = ContextVar("granary_masker", default=None)


@contextmanager
def masking(masker: Masker) -> Iterator[Masker]:
    """Make `masker` the current one, for everything done (and logged) in this context."""
    token = _current.set(masker)
    try:
        yield masker
    finally:
        _current.reset(token)


def current() -> Masker:
    """The current masker; outside an execution, one that masks credentials written into URIs."""
    return _current.get() or Masker()


def install_log_masking() -> None:
    """Mask every log record created while a masker is current: its message and its traceback, before any handler
    (Prefect's API handler, the console) sees it. Installed once per process; records made outside an execution are
    left as they are."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "granary_masks", False):
        return

    def masked_record(*arguments: Any, **options: Any) -> logging.LogRecord:
        record = factory(*arguments, **options)
        masker = _current.get()
        if masker is None:
            return record
        message = record.getMessage()
        masked = masker.text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = masker.text(logging.Formatter().formatException(record.exc_info))
        return record

    masked_record.granary_masks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)


def uri_credentials(value: Any) -> list[str]:
    """The passwords and user names written into the URIs of a document (its arguments), to mask wherever else
    they show, not only inside the URI.

    Example:
        >>> uri_credentials({"scene": "https://ada:s3cr3t@example.com/a.tif", "bands": [3]})
        ['ada:s3cr3t', 's3cr3t']
    """
    found: list[str] = []
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urlsplit(value)
        if parts.password:
            found += [f"{parts.username}:{parts.password}", unquote(parts.password)]
        elif parts.username:
            found.append(unquote(parts.username))
    elif isinstance(value, dict):
        found += [secret for item in value.values() for secret in uri_credentials(item)]
    elif isinstance(value, list):
        found += [secret for item in value for secret in uri_credentials(item)]
    return found


def without_credentials(uri: str) -> str:
    """A URI as it may be logged: `user:password@` taken out.

    Example:
        >>> without_credentials("https://ada:pw@example.com/scene.tif?x=1")
        'https://****@example.com/scene.tif?x=1'
    """
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}"))
