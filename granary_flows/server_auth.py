"""The credential of the Prefect servers granary starts. Prefect's open-source server has no users and no roles: whoever
reaches its API can read every block (the keys that sign result links among them), run any deployment and pose as
anyone in a run's tags. So every server granary starts requires Prefect's basic credential
(`PREFECT_SERVER_API_AUTH_STRING`) unless the operator turns it off on purpose (`GRANARY_SERVER_AUTH=off`), and only on
loopback.

The credential is `PREFECT_SERVER_API_AUTH_STRING` when the operator sets it (the topology's replicas share one so);
otherwise one generated once per Prefect home, in `$PREFECT_HOME/granary/server-credential`, readable by its owner only.
Every granary command on the machine finds it there: it is given to Prefect's client as `PREFECT_API_AUTH_STRING`
before Prefect reads its settings, unless that is set already or the server used is not on this machine.

Nothing here imports Prefect: the environment must be right before Prefect is first imported.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path
from urllib.parse import urlsplit

from granary_flows.errors import GranaryError

SERVER_VARIABLE = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_VARIABLE = "PREFECT_API_AUTH_STRING"
SWITCH_VARIABLE = "GRANARY_SERVER_AUTH"  # `off` runs a server without credentials (loopback only)
USER = "granary"
Environment = MutableMapping[str, str]


def credential_file(environ: Environment | None = None) -> Path:
    """Where the generated credential of this Prefect home is kept.

    Example:
        >>> str(credential_file({"PREFECT_HOME": "/srv/prefect"}))
        '/srv/prefect/granary/server-credential'
    """
    env = os.environ if environ is None else environ
    return Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser() / "granary" / "server-credential"


def switched_off(environ: Environment | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(SWITCH_VARIABLE, "").strip().lower() == "off"


def server_credential(environ: Environment | None = None, create: bool = True) -> str | None:
    """The credential a server granary starts requires: the operator's `PREFECT_SERVER_API_AUTH_STRING`, else the one
    kept for this Prefect home (made now, when there is none and `create`). None when switched off.

    Raises:
        GranaryError: the kept credential cannot be read or written, or others may read it.
    """
    env = os.environ if environ is None else environ
    if switched_off(env):
        return None
    if env.get(SERVER_VARIABLE):
        return env[SERVER_VARIABLE]
    path = credential_file(env)
    kept = _read_kept(path)
    if kept is not None or not create:
        return kept
    return _make_kept(path)


def _read_kept(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise GranaryError(
                f"{path} can be read by others (mode {oct(mode & 0o777)}): `chmod 600 {path}`, or remove it to make a "
                "new credential"
            )
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as err:
        raise GranaryError(f"cannot read the Prefect server's credential {path}: {err}") from err


def _make_kept(path: Path) -> str:
    """A new credential, written with mode 0600; when two processes make one at once, the first one written wins."""
    credential = f"{USER}:{secrets.token_urlsafe(32)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_kept(path) or credential
    except OSError as err:
        raise GranaryError(f"cannot keep the Prefect server's credential in {path}: {err}") from err
    with os.fdopen(descriptor, "w") as file:
        file.write(credential + "\n")
    return credential


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only.

    Example:
        >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.0.0.5", "")]
        [True, True, True, False, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listening(host: str, credential: str | None) -> None:
    """A server without credentials listens on loopback only.

    Raises:
        GranaryError: `host` reaches beyond this machine and the server would take anyone.
    """
    if credential is None and not is_loopback(host):
        raise GranaryError(
            f"refusing to serve Prefect's API on {host} without credentials ({SWITCH_VARIABLE}=off): anyone who "
            "reaches it could read every block, run every task and pose as any user. Unset "
            f"{SWITCH_VARIABLE} (granary then requires a credential), or listen on 127.0.0.1"
        )


def use_for_client(api_url: str | None, environ: Environment | None = None) -> None:
    """Give Prefect's client in this process (and the processes it starts) the credential of a server on this machine.

    Left alone when `PREFECT_API_AUTH_STRING` is set already (the operator's, for a server elsewhere), when the server
    is not on this machine, or when there is no credential to give.
    """
    env = os.environ if environ is None else environ
    if env.get(CLIENT_VARIABLE):
        return
    host = urlsplit(api_url).hostname if api_url else "127.0.0.1"
    if not host or not is_loopback(host):
        return
    credential = server_credential(env, create=False)
    if credential:
        env[CLIENT_VARIABLE] = credential
