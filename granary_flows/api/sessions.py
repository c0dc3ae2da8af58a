"""A browser's sign-in: `/login` takes a token once and answers with a session cookie that holds no token, only who
signed in, until when, and a signature by the installation's signing key (`keys`). The session lasts
`GRANARY_SESSION_HOURS` (12) at most, and no longer than the OIDC token it was made from; `/logout` ends it for good
(its id is recorded as ended in the results store, where every API instance sees it), and so does rotating the
signing key (for every session at once). A static token's session is checked against the API's tokens at every
request, so a token taken out of the tokens file signs its sessions out once the API has read the file again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import threading
import time

from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from granary_flows.errors import GranaryError
from granary_flows.keys import current_keys
from granary_flows.store import ResultsStore

SESSION_COOKIE = "granary_session"
PURPOSE = "session"
ENDED_SESSIONS = ".granary/ended-sessions"  # under the results root: one empty document per session ended early
ENDED_TTL = 5.0  # seconds another API instance may take to see a sign-out


def session_seconds() -> int:
    """How long a sign-in lasts at most (`GRANARY_SESSION_HOURS`, 12)."""
    return int(float(os.environ.get("GRANARY_SESSION_HOURS") or "12") * 3600)


class Session(BaseModel):
    """Who signed in, how, and until when. `token` is the static token's digest (never the token itself)."""

    id: str
    subject: str
    roles: list[str] = []
    via: str
    token: str | None = None
    expires: int


class Sessions:
    """Issues, reads and ends sessions.

    Args:
        store: the results store, where ended sessions are recorded.
    """

    def __init__(self, store: ResultsStore):
        self.store = store
        self._ended: dict[str, float] = {}  # id -> when it was last seen not ended (monotonic); or -1: ended
        self._lock = threading.Lock()

    def issue(self, subject: str, roles: list[str], via: str, token: str | None, ends_by: int | None) -> str:
        """A new session's cookie value.

        Args:
            ends_by: a time (Unix seconds) it must not outlast: the OIDC token's expiry.
        """
        keys = current_keys(create=True)
        if keys is None:  # made when there were none: only a server that refuses it leaves none
            raise GranaryError("the keys that sign sessions could not be made")
        expires = int(time.time()) + session_seconds()
        if ends_by is not None:
            expires = min(expires, ends_by)
        session = Session(id=secrets.token_hex(16), subject=subject, roles=roles, via=via, token=token, expires=expires)
        payload = base64.urlsafe_b64encode(session.model_dump_json().encode()).decode().rstrip("=")
        return f"{payload}.{keys.sign(PURPOSE, payload)}"

    def read(self, cookie: str) -> Session | None:
        """The session a cookie holds, when its signature holds, it has not expired and it was not ended."""
        payload, _, signature = cookie.partition(".")
        keys = current_keys()
        if keys is None or not payload or not keys.holds(signature, PURPOSE, payload):
            return None
        try:
            session = Session.model_validate_json(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValidationError, ValueError, binascii.Error):
            return None
        if session.expires < time.time() or self._was_ended(session.id):
            return None
        return session

    def end(self, cookie: str) -> Session | None:
        """End the session a cookie holds, here and for every API instance; the session, or None for none."""
        session = self.read(cookie)
        if session is not None:
            self.store.write_json(f"{ENDED_SESSIONS}/{session.id}", {"expires": session.expires})
            with self._lock:
                self._ended[session.id] = -1
        return session

    def _was_ended(self, session_id: str) -> bool:
        with self._lock:
            seen = self._ended.get(session_id)
        if seen == -1:
            return True
        if seen is not None and time.monotonic() - seen < ENDED_TTL:
            return False
        ended = self.store.exists(f"{ENDED_SESSIONS}/{session_id}")
        with self._lock:
            if len(self._ended) > 10_000:
                self._ended.clear()
            self._ended[session_id] = -1 if ended else time.monotonic()
        return ended


def set_session_cookie(response: Response, value: str, secure: bool) -> None:
    """The session cookie: HTTP-only, for this site's own requests, for as long as a session lasts, and `Secure` when
    the API is reached over https."""
    response.set_cookie(
        SESSION_COOKIE, value, httponly=True, samesite="strict", max_age=session_seconds(), path="/", secure=secure
    )


def end_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode(errors="surrogatepass")).hexdigest()


def unverified_expiry(token: str) -> int | None:
    """An already verified JWT's `exp`, or None for a static token."""
    if token.count(".") != 2:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    except (ValueError, binascii.Error):
        return None
    return int(claims["exp"]) if isinstance(claims, dict) and isinstance(claims.get("exp"), int | float) else None
