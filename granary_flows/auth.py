"""How `granary api` identifies users: its settings, each with a GRANARY_* variable, read when the API starts from the
environment or from a `GranaryAuth` block shared by every API instance (`GRANARY_AUTH_BLOCK`).

Who a request comes from, and what it may do, is decided in `api.identity`.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from granary_flows.configured import from_block_or_environment

AUTH_BLOCK_VARIABLE = "GRANARY_AUTH_BLOCK"
AUTH_BLOCK_TYPE = "granary-auth"


class AuthSettings(BaseModel):
    """How `granary api` identifies requests. Every field is described once, here; each has a GRANARY_* variable."""

    mode: str = Field(
        default="",
        description="tokens, oidc, both as 'tokens,oidc', or off (GRANARY_API_AUTH). Unset: refuse to start.",
    )
    tokens_file: str | None = Field(
        default=None,
        description="A YAML or JSON list of {token, subject, roles}; a token may be given as `sha256:<hex>` "
        "(GRANARY_API_TOKENS_FILE).",
    )
    issuer: str | None = Field(default=None, description="The OIDC issuer tokens must name (GRANARY_OIDC_ISSUER).")
    audience: str | None = Field(default=None, description="The audience tokens must name (GRANARY_OIDC_AUDIENCE).")
    jwks_url: str | None = Field(default=None, description="Where the issuer's keys are (GRANARY_OIDC_JWKS_URL).")
    jwks_file: str | None = Field(default=None, description="The issuer's keys, offline (GRANARY_OIDC_JWKS_FILE).")
    roles_claim: str = Field(
        default="realm_access.roles", description="The claim holding a user's roles (GRANARY_OIDC_ROLES_CLAIM)."
    )
    subject_claim: str = Field(
        default="preferred_username",
        description="The claim naming a user; `sub` when absent (GRANARY_OIDC_SUBJECT_CLAIM).",
    )
    admin_role: str = Field(
        default="admin", description="The role that registers tasks and sees every job (GRANARY_ADMIN_ROLE)."
    )

    @property
    def modes(self) -> set[str]:
        return {part.strip() for part in self.mode.split(",") if part.strip()}

    @property
    def off(self) -> bool:
        return self.modes == {"off"}


def auth_from_environment(environ: dict[str, str] | None = None) -> AuthSettings:
    env = os.environ if environ is None else environ
    names = {
        "mode": "GRANARY_API_AUTH",
        "tokens_file": "GRANARY_API_TOKENS_FILE",
        "issuer": "GRANARY_OIDC_ISSUER",
        "audience": "GRANARY_OIDC_AUDIENCE",
        "jwks_url": "GRANARY_OIDC_JWKS_URL",
        "jwks_file": "GRANARY_OIDC_JWKS_FILE",
        "roles_claim": "GRANARY_OIDC_ROLES_CLAIM",
        "subject_claim": "GRANARY_OIDC_SUBJECT_CLAIM",
        "admin_role": "GRANARY_ADMIN_ROLE",
    }
    return AuthSettings.model_validate({field: env[name] for field, name in names.items() if env.get(name)})


def current_auth() -> AuthSettings:
    """How this API identifies users: the `GranaryAuth` block named by `GRANARY_AUTH_BLOCK`, else the environment."""
    return from_block_or_environment(AUTH_BLOCK_VARIABLE, AUTH_BLOCK_TYPE, AuthSettings, auth_from_environment)
