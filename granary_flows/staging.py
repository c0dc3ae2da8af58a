"""Input staging: on local Docker the container has no network, so `format: uri` arguments are fetched first."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec

from granary_flows.contract import INPUT_DIR
from granary_flows.errors import StagingError

STAGED_SCHEMES = ("file", "s3", "http", "https")


def uri_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, str]:
    """The top-level arguments declared `format: uri` whose value is a URI the runtime can fetch."""
    found = {}
    for name, spec in schema.get("properties", {}).items():
        value = arguments.get(name)
        declared_uri = isinstance(spec, dict) and spec.get("format") == "uri"
        if declared_uri and isinstance(value, str) and urlparse(value).scheme in STAGED_SCHEMES:
            found[name] = value
    return found


def stage_inputs(uris: dict[str, str], folder: Path) -> dict[str, str]:
    """Fetch each URI into `folder/<argument>/<file name>`.

    Args:
        uris: argument name -> URI, as `uri_arguments` returns.
        folder: a local folder, later mounted read-only at `/granary/inputs`.

    Returns:
        argument name -> the path the container sees.

    Raises:
        StagingError: naming the argument and URI that could not be read; nothing has started yet.
    """
    container_paths = {}
    for name, uri in uris.items():
        file_name = posixpath.basename(urlparse(uri).path.rstrip("/")) or name
        target = folder / name / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fsspec.open(uri, "rb") as source, open(target, "wb") as sink:
                while chunk := source.read(8 * 1024 * 1024):
                    sink.write(chunk)
        except (OSError, ValueError, ImportError) as err:
            raise StagingError(f"cannot read input {name!r} from {uri}: {err}") from err
        container_paths[name] = f"{INPUT_DIR}/{name}/{file_name}"
    return container_paths
