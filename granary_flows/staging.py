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


def uri_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, str | list[str]]:
    """The top-level arguments declared `format: uri` (or arrays of them) whose values the runtime can fetch."""
    return {
        name: value for name, value in arguments.items() if _stageable(schema.get("properties", {}).get(name), value)
    }


def _stageable(spec: Any, value: Any) -> bool:
    if _is_uri(spec):
        return isinstance(value, str) and _fetchable(value)
    if isinstance(spec, dict) and spec.get("type") == "array" and _is_uri(spec.get("items")):
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) and _fetchable(v) for v in value)
    return False


def stage_inputs(uris: dict[str, str | list[str]], folder: Path) -> dict[str, str | list[str]]:
    """Fetch each URI into `folder/<argument>/<file name>`.

    Args:
        uris: argument name -> URI (or list of URIs), as `uri_arguments` returns.
        folder: a local folder, later mounted read-only at `/granary/inputs`.

    Returns:
        argument name -> the path (or paths) the container sees; a list's files share the folder
        `/granary/inputs/<argument>/`.

    Raises:
        StagingError: naming the argument and URI that could not be read; nothing has started yet.
    """
    container_paths: dict[str, str | list[str]] = {}
    for name, value in uris.items():
        listed = [value] if isinstance(value, str) else value
        # Files of one list with the same name (each tile's ndvi.tif) each get a folder of their own.
        clash = len({_file_name(uri, name) for uri in listed}) < len(listed)
        paths = [_fetch(name, uri, folder / name, f"{index}/" if clash else "") for index, uri in enumerate(listed)]
        container_paths[name] = paths[0] if isinstance(value, str) else paths
    return container_paths


def input_folder(argument: str) -> str:
    return f"{INPUT_DIR}/{argument}"


def _file_name(uri: str, argument: str) -> str:
    return posixpath.basename(urlparse(uri).path.rstrip("/")) or argument


def _fetch(name: str, uri: str, folder: Path, subfolder: str = "") -> str:
    file_name = subfolder + _file_name(uri, name)
    target = folder / file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with fsspec.open(uri, "rb") as source, open(target, "wb") as sink:
            while chunk := source.read(8 * 1024 * 1024):
                sink.write(chunk)
    except (OSError, ValueError, ImportError) as err:
        raise StagingError(f"cannot read input {name!r} from {uri}: {err}") from err
    return f"{input_folder(name)}/{file_name}"


def _is_uri(spec: Any) -> bool:
    return isinstance(spec, dict) and spec.get("format") == "uri"


def _fetchable(value: str) -> bool:
    return urlparse(value).scheme in STAGED_SCHEMES
