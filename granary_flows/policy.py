"""The operator's policy: what the runner may read, fetch and copy on a user's or an image's behalf.

The container is sandboxed; the runner is not. So everything the runner does with its own rights because a task's
arguments or a container's outputs asked for it stays inside this policy:

- `file://` inputs only from under the listed roots (none by default);
- `http(s)://` inputs only from public addresses (loopback, link-local such as 169.254.169.254, private ranges and
  the Prefect server are refused, also after a redirect and whatever DNS answers) unless an address is allowed;
- `s3://` inputs only from the listed buckets, when a list is given;
- at most so many bytes per input, per execution's inputs, and per execution's outputs;
- only the listed variables of the runner's own environment passed into containers that ask for them.

It is read from the environment (`GRANARY_ALLOW_FILE_ROOTS`, ...), or from a `GranaryPolicy` block named by
`GRANARY_POLICY_BLOCK`, which is how workers on other hosts share one policy.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from granary_flows.configured import from_block_or_environment

MIB = 2**20
POLICY_BLOCK_VARIABLE = "GRANARY_POLICY_BLOCK"
POLICY_BLOCK_TYPE = "granary-policy"


class Policy(BaseModel):
    """What the runner may do on a user's behalf. Every field is described once, here."""

    file_roots: list[str] = Field(
        default_factory=list,
        description="Folders `file://` inputs may come from (GRANARY_ALLOW_FILE_ROOTS, ':'-separated).",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Addresses http(s) inputs may come from although they are not public: host names, IP addresses "
        "or networks (CIDR), each optionally with :port (GRANARY_ALLOW_HOSTS, ','-separated).",
    )
    buckets: list[str] | None = Field(
        default=None, description="Buckets `s3://` inputs may come from; unset: any (GRANARY_ALLOW_BUCKETS)."
    )
    max_input_mib: float = Field(default=8192, gt=0, description="Largest single input (GRANARY_MAX_INPUT_MIB).")
    max_inputs_mib: float = Field(
        default=16384, gt=0, description="All of an execution's inputs together (GRANARY_MAX_INPUTS_MIB)."
    )
    max_output_mib: float = Field(
        default=4096, gt=0, description="All of an execution's outputs together (GRANARY_MAX_OUTPUT_MIB)."
    )
    max_output_files: int = Field(
        default=10_000, gt=0, description="Files an execution may write (GRANARY_MAX_OUTPUT_FILES)."
    )
    pass_environment: list[str] = Field(
        default_factory=list,
        description="Variables of the runner's environment a task may ask to pass on (GRANARY_PASS_ENVIRONMENT).",
    )
    allow_images: list[str] | None = Field(
        default=None, description="Image prefixes a task may be registered with; unset: any (GRANARY_ALLOW_IMAGES)."
    )
    require_images: bool = Field(
        default=False,
        description="Refuse to register a Docker task whose image is not on the engine it is registered from "
        "(GRANARY_REQUIRE_IMAGES); otherwise it is registered with a warning.",
    )
    pin_images: bool = Field(
        default=False, description="Record each image's digest at registration and run only that (GRANARY_PIN_IMAGES)."
    )

    @property
    def max_input_bytes(self) -> int:
        return int(self.max_input_mib * MIB)

    @property
    def max_inputs_bytes(self) -> int:
        return int(self.max_inputs_mib * MIB)

    @property
    def max_output_bytes(self) -> int:
        return int(self.max_output_mib * MIB)

    def file_root_of(self, path: Path) -> Path | None:
        """The allowed root a resolved path lies under, if any."""
        for root in self.file_roots:
            resolved = Path(root).expanduser().resolve()
            if path == resolved or resolved in path.parents:
                return resolved
        return None

    def address_allowed(self, host: str, address: str, port: int) -> bool:
        """Whether an http(s) input may be fetched from `address` (which `host` resolved to) on `port`."""
        ip = ipaddress.ip_address(address)
        if _is_prefect_server(ip, port):
            return False
        for entry in self.allow_hosts:
            name, wanted_port = _host_and_port(entry)
            if wanted_port is not None and wanted_port != port:
                continue
            if name == host or _in_network(ip, name):
                return True
        return ip.is_global and not ip.is_multicast

    def bucket_allowed(self, bucket: str) -> bool:
        return self.buckets is None or bucket in self.buckets


def _host_and_port(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `10.0.0.0/8`, `[::1]:8080` -> (host, port or None).

    Example:
        >>> _host_and_port("127.0.0.1:8080"), _host_and_port("[::1]:81"), _host_and_port("10.0.0.0/8")
        (('127.0.0.1', 8080), ('::1', 81), ('10.0.0.0/8', None))
    """
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None


def _in_network(ip: Any, entry: str) -> bool:
    try:
        return ip in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def _is_prefect_server(ip: Any, port: int) -> bool:
    """The Prefect server's own address is never an input, whatever the policy allows."""
    from urllib.parse import urlsplit

    api = urlsplit(os.environ.get("PREFECT_API_URL", ""))
    if not api.hostname or (api.port or (443 if api.scheme == "https" else 80)) != port:
        return False
    try:
        import socket

        addresses = {info[4][0] for info in socket.getaddrinfo(api.hostname, None)}
    except OSError:
        return False
    return str(ip) in addresses or (ip.is_loopback and any(ipaddress.ip_address(a).is_loopback for a in addresses))


def _split(value: str | None, separator: str) -> list[str]:
    return [part.strip() for part in (value or "").split(separator) if part.strip()]


def policy_from_environment(environ: dict[str, str] | None = None) -> Policy:
    """The policy the `GRANARY_*` variables give (see `Policy` for each)."""
    env = os.environ if environ is None else environ
    fields: dict[str, Any] = {
        "file_roots": _split(env.get("GRANARY_ALLOW_FILE_ROOTS"), os.pathsep),
        "allow_hosts": _split(env.get("GRANARY_ALLOW_HOSTS"), ","),
        "pass_environment": _split(env.get("GRANARY_PASS_ENVIRONMENT"), ","),
        "pin_images": env.get("GRANARY_PIN_IMAGES", "").lower() in ("1", "true", "yes"),
        "require_images": env.get("GRANARY_REQUIRE_IMAGES", "").lower() in ("1", "true", "yes"),
    }
    if env.get("GRANARY_ALLOW_BUCKETS") is not None:
        fields["buckets"] = _split(env["GRANARY_ALLOW_BUCKETS"], ",")
    if env.get("GRANARY_ALLOW_IMAGES") is not None:
        fields["allow_images"] = _split(env["GRANARY_ALLOW_IMAGES"], ",")
    if env.get("GRANARY_MAX_OUTPUT_FILES"):
        fields["max_output_files"] = int(env["GRANARY_MAX_OUTPUT_FILES"])
    for field, variable in (
        ("max_input_mib", "GRANARY_MAX_INPUT_MIB"),
        ("max_inputs_mib", "GRANARY_MAX_INPUTS_MIB"),
        ("max_output_mib", "GRANARY_MAX_OUTPUT_MIB"),
    ):
        if env.get(variable):
            fields[field] = float(env[variable])
    return Policy.model_validate(fields)


def current_policy() -> Policy:
    """The policy of this process: the `GranaryPolicy` block named by `GRANARY_POLICY_BLOCK`, else the environment."""
    return from_block_or_environment(POLICY_BLOCK_VARIABLE, POLICY_BLOCK_TYPE, Policy, policy_from_environment)
