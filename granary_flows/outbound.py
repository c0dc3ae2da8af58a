"""Requests the runner or the API make to addresses a user gave (inputs, subscriber callbacks): only to addresses the
operator's policy allows, checked on every address DNS gives, and sent to one of those very addresses, so that a
second lookup cannot answer something else (DNS rebinding)."""

from __future__ import annotations

import base64
import socket
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from granary_flows.errors import GranaryError
from granary_flows.masking import without_credentials
from granary_flows.policy import Policy


class OutboundRefused(GranaryError):
    """An address the policy does not allow."""


def pinned_request(client: httpx.Client, method: str, uri: str, policy: Policy, **options: Any) -> httpx.Request:
    """A request to one checked address of the URI's host.

    Raises:
        OutboundRefused: not http(s), no address, or an address that is not public and not allowed.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused(f"{without_credentials(uri)} is not an http(s) address")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = sorted(
            {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
        )
    except OSError as err:
        raise OutboundRefused(f"{parts.hostname} does not resolve ({err})") from err
    refused = [a for a in addresses if not policy.address_allowed(parts.hostname, a, port)]
    if refused or not addresses:
        where = (
            f"{parts.hostname} ({', '.join(refused)})" if refused and refused != [parts.hostname] else parts.hostname
        )
        raise OutboundRefused(f"{where} is not a public address, and GRANARY_ALLOW_HOSTS does not allow it")
    address = addresses[0]
    host = f"[{address}]" if ":" in address else address
    pinned = parts._replace(netloc=f"{host}:{port}").geturl()
    headers = dict(options.pop("headers", {})) | {"Host": parts.netloc.rsplit("@", 1)[-1]}
    if parts.username or parts.password:
        token = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode())
        headers["Authorization"] = f"Basic {token.decode()}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return client.build_request(method, pinned, headers=headers, extensions=extensions, **options)
