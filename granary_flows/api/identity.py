"""Who is asking: every request to `granary api` is identified here, in one place, and every right is decided here.

Identities come from OIDC bearer tokens (JWTs verified against the issuer's JWKS, read from a URL or from a file for
offline installs; issuer, audience and expiry checked; roles from a configurable claim, Keycloak's
`realm_access.roles` by default) or from static API tokens listed in a file (for small installs). Authentication is
off only when configured so (`GRANARY_API_AUTH=off`), and the landing page then says so.

Rights: the admin role registers, replaces and undeploys processes and sees every job; executing a process needs one
of the roles its task names in `access` (none: every authenticated user); a user sees, reads and dismisses only the
jobs they submitted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import yaml
from pydantic import BaseModel

from granary_flows.api.sessions import Session
from granary_flows.auth import AuthSettings
from granary_flows.errors import GranaryError

audit = logging.getLogger("granary.audit")
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]  # never "none"


class Identity(BaseModel):
    """Who a request comes from."""

    subject: str
    roles: list[str] = []
    via: str  # token, oidc, or off (authentication is switched off)
    admin: bool = False


class Unauthenticated(GranaryError):
    """No identity, or one that does not hold: 401."""

    def __init__(self, detail: str, invalid: bool):
        self.invalid = invalid
        super().__init__(detail)


class Forbidden(GranaryError):
    """An identity without the right: 403."""


class Authenticator:
    """Turns a request's Authorization header into an Identity, as the settings say.

    Raises:
        GranaryError: at construction, when the settings name no way to authenticate.
    """

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        unknown = settings.modes - {"tokens", "oidc", "off"}
        if not settings.modes or unknown:
            raise GranaryError(
                "configure how granary api identifies users: GRANARY_API_AUTH=tokens (with GRANARY_API_TOKENS_FILE), "
                "oidc (with GRANARY_OIDC_ISSUER, GRANARY_OIDC_AUDIENCE and a JWKS), or off"
                + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
            )
        if "off" in settings.modes and len(settings.modes) > 1:
            raise GranaryError("GRANARY_API_AUTH=off cannot be combined with another mode")
        self._tokens = self._read_tokens() if "tokens" in settings.modes else []
        if "oidc" in settings.modes and not (
            settings.issuer and settings.audience and (settings.jwks_url or settings.jwks_file)
        ):
            raise GranaryError(
                "oidc needs GRANARY_OIDC_ISSUER, GRANARY_OIDC_AUDIENCE and GRANARY_OIDC_JWKS_URL (or _FILE)"
            )
        self._keys: dict[str, Any] = {}
        self._keys_read = 0.0
        self._lock = threading.Lock()

    def describe(self) -> str:
        """How users are identified, for the operator; never a token."""
        if self.settings.off:
            return "authentication is off: anyone who reaches this API may register, run, see and dismiss everything"
        ways = []
        if "tokens" in self.settings.modes:
            ways.append(f"{len(self._tokens)} API token(s) from {self.settings.tokens_file}")
        if "oidc" in self.settings.modes:
            ways.append(f"OIDC tokens of {self.settings.issuer} for {self.settings.audience}")
        return "identities: " + "; ".join(ways) + f" (admin role: {self.settings.admin_role})"

    def identify(self, authorization: str | None) -> Identity:
        """The identity of a request with this Authorization header.

        Raises:
            Unauthenticated: none given, or one that does not hold (bad signature, expired, wrong audience, ...).
        """
        if self.settings.off:
            return Identity(subject="anonymous", roles=[self.settings.admin_role], via="off", admin=True)
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthenticated("this API needs a bearer token (Authorization: Bearer ...)", invalid=False)
        credential = credential.strip()
        if "tokens" in self.settings.modes:
            found = self._static(credential)
            if found is not None:
                return found
        if "oidc" in self.settings.modes and credential.count(".") == 2:
            return self._oidc(credential)
        raise Unauthenticated("the bearer token is not valid", invalid=True)

    def identify_session(self, session: Session) -> Identity | None:
        """The identity a browser's session stands for: a static token's as the tokens file says now (None once the
        token is taken out of it), an OIDC user's as the token it signed in with said."""
        if self.settings.off:
            return Identity(subject="anonymous", roles=[self.settings.admin_role], via="off", admin=True)
        if session.via == "token" and session.token and "tokens" in self.settings.modes:
            return self._by_digest(session.token)
        if session.via == "oidc" and "oidc" in self.settings.modes:
            roles = session.roles
            return Identity(subject=session.subject, roles=roles, via="oidc", admin=self.settings.admin_role in roles)
        return None

    def _read_tokens(self) -> list[dict[str, Any]]:
        path = self.settings.tokens_file
        if not path:
            raise GranaryError("tokens needs GRANARY_API_TOKENS_FILE: a list of {token, subject, roles}")
        try:
            entries = yaml.safe_load(Path(path).expanduser().read_text()) or []
        except (OSError, yaml.YAMLError) as err:
            raise GranaryError(f"cannot read the API tokens file {path}: {err}") from err
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and e.get("token") and e.get("subject") for e in entries
        ):
            raise GranaryError(f"the API tokens file {path} must list {{token, subject, roles}} entries")
        return [
            {
                "digest": _stored_digest(str(e["token"])),
                "subject": str(e["subject"]),
                "roles": [str(r) for r in e.get("roles") or []],
            }
            for e in entries
        ]

    def _static(self, credential: str) -> Identity | None:
        """The identity whose token this is. The credential is always hashed first, so that a stored digest is never
        itself a credential; every entry is compared, in constant time, whichever matches."""
        return self._by_digest(hashlib.sha256(credential.encode(errors="surrogatepass")).hexdigest())

    def _by_digest(self, digest: str) -> Identity | None:
        found = None
        for entry in self._tokens:
            if hmac.compare_digest(entry["digest"], digest) and found is None:
                found = entry
        if found is None:
            return None
        roles = found["roles"]
        return Identity(subject=found["subject"], roles=roles, via="token", admin=self.settings.admin_role in roles)

    def _oidc(self, credential: str) -> Identity:
        try:
            header = jwt.get_unverified_header(credential)
        except (jwt.PyJWTError, TypeError, ValueError) as err:
            raise Unauthenticated(f"the bearer token is not a JWT: {err}", invalid=True) from err
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated(f"tokens signed with {header.get('alg')!r} are not accepted", invalid=True)
        key = self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                credential,
                key=key,
                algorithms=ALGORITHMS,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                options={"require": ["exp", "iss", "aud"]},
                leeway=30,
            )
        except (jwt.PyJWTError, TypeError, ValueError) as err:  # a key of another type than the token's algorithm
            raise Unauthenticated(f"the bearer token does not hold: {err}", invalid=True) from err
        roles = _claim(claims, self.settings.roles_claim)
        roles = [str(r) for r in roles] if isinstance(roles, list) else []
        subject = str(claims.get(self.settings.subject_claim) or claims.get("sub") or "")
        if not subject:
            raise Unauthenticated("the bearer token names no user", invalid=True)
        return Identity(subject=subject, roles=roles, via="oidc", admin=self.settings.admin_role in roles)

    def _key(self, kid: str | None) -> Any:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._keys_read > 30:  # a rotated key, read again
                self._keys = self._read_keys()
                self._keys_read = time.monotonic()
            if kid in self._keys:
                return self._keys[kid]
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
        raise Unauthenticated("the bearer token is signed with a key the issuer does not list", invalid=True)

    def _read_keys(self) -> dict[str, Any]:
        if self.settings.jwks_file:
            document = json.loads(Path(self.settings.jwks_file).expanduser().read_text())
        else:
            document = httpx.get(str(self.settings.jwks_url), timeout=10).json()
        keys = {}
        for entry in document.get("keys", []):
            try:
                keys[entry.get("kid")] = jwt.PyJWK(entry).key
            except jwt.PyJWTError:
                continue
        return keys


def _stored_digest(token: str) -> str:
    """The digest of a token as the tokens file keeps it: `sha256:<hex>` (what the file should hold), or the token."""
    if token.startswith("sha256:"):
        return token.removeprefix("sha256:").lower()
    return hashlib.sha256(token.encode()).hexdigest()


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def may_execute(identity: Identity, access: list[str]) -> bool:
    return identity.admin or not access or bool(set(access) & set(identity.roles))


def may_see(identity: Identity, submitter: str | None) -> bool:
    return identity.admin or (submitter is not None and submitter == identity.subject)


def record(identity: Identity | None, action: str, target: str, outcome: str, **details: Any) -> None:
    """One structured audit line: who, what, when, outcome. Never a token or a secret."""
    audit.info(
        json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "who": identity.subject if identity else None,
                "via": identity.via if identity else None,
                "action": action,
                "target": target,
                "outcome": outcome,
            }
            | details,
            default=str,
        )
    )
