"""Secrets never leave masked: every line, message and document a person can read goes through a `Masker`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "****"
_CREDENTIALS_IN_URI = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


class Masker:
    """Replaces secret values (and credentials written into URIs) wherever text shows them.

    Example:
        >>> Masker(["s3cr3t"]).text("token s3cr3t from https://ada:pw@example.com/x")
        'token **** from https://****@example.com/x'
    """

    def __init__(self, secrets: list[str] | None = None):
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets or [] if s and len(s) >= 3}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, MASK)
        return _CREDENTIALS_IN_URI.sub(lambda m: f"{m.group('scheme')}{MASK}@", value)

    def document(self, value: Any) -> Any:
        """A JSON-like value with every string masked (keys included); the input is not changed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)) if isinstance(k, str) else k: self.document(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.document(item) for item in value]
        return value


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
