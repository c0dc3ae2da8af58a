"""What an execution produced: result assets and the results document, collected the same way for every runtime.

Precedence (the container contract, in the README): `results.json` in Granary's webhook shape, then a last stdout
line `{"plugin_results": ...}`, then the output files (those matching the task's declared patterns, if any). Every
href must name one of the execution's own outputs.
"""

from __future__ import annotations

import fnmatch
import json
import mimetypes
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from granary_flows.contract import RESULTS_FILE, SIDECAR_SUFFIX, parse_plugin_results
from granary_flows.definition import DEFAULT_OUTPUT_DIR, OutputFile
from granary_flows.errors import ErrorCategory, ExecutionFailed
from granary_flows.layout import output_path_in
from granary_flows.store import StoredOutputs

ANNOTATES = "granary:annotates"  # on a side-car result that annotates an input rather than an output
mimetypes.add_type("image/tiff; application=geotiff", ".tif")
mimetypes.add_type("image/tiff; application=geotiff", ".tiff")
mimetypes.add_type("application/geo+json", ".geojson")


class ResultAsset(BaseModel):
    """One result: Granary's `{href, title, description, roles, type}`, keeping any other keys a container gave."""

    model_config = ConfigDict(extra="allow")

    href: str
    title: str | None = None
    description: str | None = None
    roles: list[str] = Field(default_factory=lambda: ["data"])
    type: str | None = None
    size: int | None = None


class CollectedResults(BaseModel):
    """The assets, and where they came from (`results.json`, `plugin_results` or `files`)."""

    source: str
    assets: list[ResultAsset]
    value: Any = None


def collect(
    stored: StoredOutputs,
    read: Callable[[str], bytes],
    last_stdout_line: str | None,
    declared: list[OutputFile],
    input_names: list[str] | None = None,
    output_path: str = DEFAULT_OUTPUT_DIR,
    webhook: Any = None,
    clean: Callable[[Any], Any] = lambda document: document,
) -> CollectedResults:
    """Collect an attempt's results from its stored output folder and its last stdout line.

    Docker outputs are uploaded by `ResultsStore.put_outputs`, Batch jobs write theirs to `OUTPUT_URI` themselves;
    from here on both are the same.

    Args:
        stored: the execution's output files in the results store.
        read: reads a stored file's bytes by URI (`ResultsStore.read_bytes`).
        last_stdout_line: the container's last line on stdout (on Batch, the last CloudWatch line).
        declared: the task's `outputs.files`.
        input_names: the task's inputs; `<input>.metadata.json` annotates that input (Seed) and is always kept.
        output_path: where the container saw its output folder; an href may name a file by its path there.
        webhook: the body posted to Granary's results webhook during the attempt, if any: it comes first.
        clean: applied to what the container reported before its hrefs are resolved (the execution's masker: an
            output named with a secret is stored under its masked name, and so is its href).

    Raises:
        ExecutionFailed: for `{"message": ...}` in results.json, a malformed results.json, a missing required output,
            or an href that names anything but a file this execution wrote (a host file, another bucket, a script).
    """
    plugin_results = clean(parse_plugin_results(last_stdout_line or ""))
    if webhook is not None:
        assets = _from_results_document(clean(webhook), stored.uris, output_path, "the webhook's body")
        collected = CollectedResults(source="webhook", assets=assets)
    elif RESULTS_FILE in stored.uris:
        assets = _from_results_json(read(stored.uris[RESULTS_FILE]), stored.uris, output_path, clean)
        collected = CollectedResults(source=RESULTS_FILE, assets=assets)
    elif plugin_results is not None:
        collected = _from_plugin_results(plugin_results, stored.uris, output_path)
        if not collected.assets:  # a value says something about the outputs; the files are still the results
            collected.assets = _from_files(stored, declared)
    else:
        collected = CollectedResults(source="files", assets=_from_files(stored, declared))
    collected.assets += _input_annotations(stored, input_names or [], collected.assets)
    return collected


def _input_annotations(stored: StoredOutputs, input_names: list[str], assets: list[ResultAsset]) -> list[ResultAsset]:
    present = {asset.href for asset in assets}
    annotations = []
    for name in input_names:
        relative = f"{name}{SIDECAR_SUFFIX}"
        if relative in stored.uris and stored.uris[relative] not in present:
            asset = _file_asset(stored, relative, title=f"{name} annotation")
            asset.description = f"annotates the input {name}"
            setattr(asset, ANNOTATES, name)
            annotations.append(asset)
    return annotations


def _from_results_json(
    content: bytes, stored: dict[str, str], output_path: str, clean: Callable[[Any], Any]
) -> list[ResultAsset]:
    try:
        document = json.loads(content)
    except ValueError as err:
        raise ExecutionFailed(f"{RESULTS_FILE} is not JSON: {err}", ErrorCategory.JOB) from err
    return _from_results_document(clean(document), stored, output_path, RESULTS_FILE)


def _from_results_document(document: Any, stored: dict[str, str], output_path: str, where: str) -> list[ResultAsset]:
    """Granary's webhook shape, from `results.json` or the webhook itself."""
    if isinstance(document, dict) and "message" in document and "results" not in document:
        raise ExecutionFailed(f"the container reported failure: {document['message']}", ErrorCategory.JOB)
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ExecutionFailed(f'{where} must be {{"results": [...]}} or {{"message": "..."}}', ErrorCategory.JOB)
    return [_asset(entry, stored, output_path) for entry in document["results"]]


def _from_plugin_results(value: Any, stored: dict[str, str], output_path: str) -> CollectedResults:
    if isinstance(value, list) and value and all(isinstance(v, dict) and "href" in v for v in value):
        return CollectedResults(source="plugin_results", assets=[_asset(v, stored, output_path) for v in value])
    return CollectedResults(source="plugin_results", assets=[], value=value)


def _asset(entry: Any, stored: dict[str, str], output_path: str) -> ResultAsset:
    if not isinstance(entry, dict) or not isinstance(entry.get("href"), str):
        raise ExecutionFailed(f"a result must be an object with an 'href': {str(entry)[:200]!r}", ErrorCategory.JOB)
    relative = own_output(entry["href"], stored, output_path)
    entry = entry | {"href": stored[relative]}
    asset = ResultAsset.model_validate(entry)
    if asset.type is None:
        asset.type = mimetypes.guess_type(relative)[0]
    return asset


def own_output(href: str, stored: dict[str, str], output_path: str = DEFAULT_OUTPUT_DIR) -> str:
    """The output (its path in the output folder) an href names: a path relative to the output folder, its path as
    the container saw it, or its URI in the store. Anything else is refused.

    Example:
        >>> own_output("./maps/a.tif", {"maps/a.tif": "file:///r/t/1/maps/a.tif"}, "/grid")
        'maps/a.tif'

    Raises:
        ExecutionFailed: a `job` error naming the href.
    """
    by_uri = {uri: relative for relative, uri in stored.items()}
    if href in by_uri:
        return by_uri[href]
    folder = output_path.rstrip("/") + "/"
    relative = output_path_in(href.removeprefix(folder) if href.startswith(folder) else href, None)
    if relative is not None and relative in stored:
        return relative
    raise ExecutionFailed(
        f"result href {href[:300]!r} does not name a file this execution wrote; results can only be its own outputs",
        ErrorCategory.JOB,
    )


def _from_files(stored: StoredOutputs, declared: list[OutputFile]) -> list[ResultAsset]:
    files = [name for name in stored.uris if name != RESULTS_FILE]
    if not declared:
        return [_file_asset(stored, name) for name in files]
    assets = []
    for output in declared:
        matches = [
            name
            for name in files
            if fnmatch.fnmatch(name, output.pattern)
            and not (name.endswith(SIDECAR_SUFFIX) and not output.pattern.endswith(SIDECAR_SUFFIX))
        ]
        if output.required and not matches:
            raise ExecutionFailed(
                f"required output {output.name!r} ({output.pattern}) was not written", ErrorCategory.JOB
            )
        if len(matches) > 1 and not output.multiple:
            raise ExecutionFailed(
                f"output {output.name!r} ({output.pattern}) matched {len(matches)} files but is not 'multiple'",
                ErrorCategory.JOB,
            )
        for name in matches:
            assets.append(_file_asset(stored, name, title=output.name, media_type=output.mediaType))
            if f"{name}{SIDECAR_SUFFIX}" in stored.uris:
                assets.append(_file_asset(stored, f"{name}{SIDECAR_SUFFIX}"))
    return assets


def _file_asset(
    stored: StoredOutputs, name: str, title: str | None = None, media_type: str | None = None
) -> ResultAsset:
    sidecar = name.endswith(SIDECAR_SUFFIX)
    return ResultAsset(
        href=stored.uris[name],
        title=title or name,
        roles=["metadata"] if sidecar else ["data"],
        type=media_type or ("application/geo+json" if sidecar else mimetypes.guess_type(name)[0]),
        size=stored.sizes.get(name),
    )
