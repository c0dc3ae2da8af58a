"""Scale's input context: the JSON document a Scale job finds at `$INPUT_METADATA`.

`JOB` describes the job's own inputs, by input name: a JSON input's value, or for a file input a list with one entry
per file (its name, media type, size, the original URI as `url`, and the geometry and times of the side-car beside it,
when there is one). Inside a pipeline, `RECIPE` describes the same for the pipeline's inputs and the outputs of the
steps before (what an upstream job wrote as `<INPUT>.metadata.json` included).
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Callable
from typing import Any

from shapely.geometry import shape

from granary_flows.definition import TaskDefinition
from granary_flows.formats.seed import parameter_name
from granary_flows.sidecars import times_of
from granary_flows.staging import StagedInput, declares_uri


def input_metadata(
    task: TaskDefinition, arguments: dict[str, Any], staged: list[StagedInput], recipe: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `$INPUT_METADATA` document of one execution of a Seed task: `JOB`, and `RECIPE` in a pipeline."""
    job: dict[str, Any] = {}
    by_argument: dict[str, list[StagedInput]] = {}
    for item in staged:
        by_argument.setdefault(item.argument, []).append(item)
    names = [file.name for file in task.seed.files] + [value.name for value in task.seed.values] if task.seed else []
    for name in names or list(arguments):
        argument = parameter_name(name)
        if argument in by_argument:
            job[name] = [
                file_details(item.uri, item.size, item.media_type, item.sidecar) for item in by_argument[argument]
            ]
        elif argument in arguments:
            job[name] = arguments[argument]
    document: dict[str, Any] = {"JOB": job}
    if recipe is not None:
        document["RECIPE"] = recipe
    return document


def file_details(
    uri: str, size: int | None = None, media_type: str | None = None, sidecar: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One file as Scale describes it (`ScaleFile` details), from its URI and side-car.

    Example:
        >>> file_details("s3://b/scene.tif", 10)["file_name"]
        'scene.tif'
    """
    name = posixpath.basename(uri.split("?", 1)[0].rstrip("/"))
    details: dict[str, Any] = {
        "file_name": name,
        "media_type": media_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
        "file_size": size,
        "url": uri,
        "data_started": None,
        "data_ended": None,
        "geometry": None,
        "meta_data": {},
    }
    if sidecar:
        properties = sidecar["properties"] if isinstance(sidecar.get("properties"), dict) else {}
        start, end = times_of(properties)
        details["data_started"] = start.isoformat() if start else None
        details["data_ended"] = end.isoformat() if end else None
        try:
            details["geometry"] = shape(sidecar["geometry"]).wkt if sidecar.get("geometry") else None
        except (ValueError, TypeError, KeyError, AttributeError):
            details["geometry"] = None
        details["meta_data"] = properties
    return details


def recipe_context(
    pipeline_schema: dict[str, Any],
    arguments: dict[str, Any],
    steps: dict[str, Any],
    read_sidecar: Callable[[str], dict[str, Any] | None],
) -> dict[str, Any]:
    """`RECIPE`: the pipeline's inputs (URIs described as files, other values as they are) and each finished step's
    results, as files with their side-cars (`steps.<step>`)."""
    recipe: dict[str, Any] = {}
    properties = pipeline_schema.get("properties", {})
    for name, value in arguments.items():
        spec = properties.get(name, {})
        if declares_uri(spec) and isinstance(value, str):
            recipe[name] = [file_details(value)]
        elif isinstance(spec, dict) and declares_uri(spec.get("items")) and isinstance(value, list):
            recipe[name] = [file_details(v) for v in value if isinstance(v, str)]
        else:
            recipe[name] = value
    for step, document in steps.items():
        documents = document if isinstance(document, list) else [document]
        files = []
        for each in documents:
            results = each.get("results", []) if isinstance(each, dict) else []
            hrefs = {asset["href"] for asset in results}
            for asset in results:
                sidecar_href = asset["href"] + ".metadata.json"
                sidecar = read_sidecar(sidecar_href) if sidecar_href in hrefs else None
                if asset["href"].endswith(".metadata.json") and "metadata" in asset.get("roles", []):
                    sidecar = read_sidecar(asset["href"])  # an input's annotation: its own content is the metadata
                files.append(file_details(asset["href"], asset.get("size"), asset.get("type"), sidecar))
        recipe[f"steps.{step}"] = files
    return recipe
