"""Execute requests (OGC API - Processes): their inputs read into a task's arguments, and a job's results written as
OGC outputs, by value or by reference."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from granary_flows.definition import TaskDefinition
from granary_flows.documents import PipelineDocument, ResultsDocument
from granary_flows.layout import output_path_in
from granary_flows.loading import Definition
from granary_flows.store import ResultsStore
from granary_flows.webhooks import output_url

TEXT_TYPES = ("text/", "application/json", "application/geo+json", "application/xml")
MAX_INLINE = 8 * 2**20  # a file returned by value; larger ones only by reference


class Subscriber(BaseModel):
    """Where to tell the client of the job's progress (OGC's callback conformance class)."""

    model_config = ConfigDict(extra="forbid")

    successUri: str | None = None
    inProgressUri: str | None = None
    failedUri: str | None = None


class OutputRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    transmissionMode: str = "value"
    format: dict[str, Any] | None = None


class ExecuteRequest(BaseModel):
    """The body of `POST /processes/{id}/execution`."""

    model_config = ConfigDict(extra="allow")

    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, OutputRequest] = Field(default_factory=dict)
    response: str = "document"
    subscriber: Subscriber | None = None


class RequestProblem(ValueError):
    """What is wrong with an execute request, each problem said (an OGC 400 exception)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_request(body: Any) -> ExecuteRequest:
    if not isinstance(body, dict):
        raise RequestProblem(["the request body must be a JSON object with `inputs`"])
    try:
        request = ExecuteRequest.model_validate(body)
    except ValidationError as err:
        raise RequestProblem(
            [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors(include_url=False)]
        ) from err
    if request.response not in ("raw", "document"):
        raise RequestProblem([f"response: {request.response!r} is not one of raw, document"])
    for name, wanted in request.outputs.items():
        if wanted.transmissionMode not in ("value", "reference"):
            raise RequestProblem(
                [f"outputs.{name}.transmissionMode: {wanted.transmissionMode!r} is not value or reference"]
            )
    return request


def arguments_from(inputs: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A task's arguments from OGC inputs: values, qualified values (`{"value": ...}`), bounding boxes as they are,
    and links (`{"href": ...}`) for arguments that are URIs (fetched as `format: uri` arguments are).

    Raises:
        RequestProblem: naming every input that cannot be read.
    """
    properties = schema.get("properties", {})
    arguments: dict[str, Any] = {}
    problems: list[str] = []
    for name, given in inputs.items():
        spec = properties[name] if isinstance(properties.get(name), dict) else {}
        try:
            if isinstance(given, list):
                items = spec["items"] if isinstance(spec.get("items"), dict) else {}
                arguments[name] = [_value(each, items, name) for each in given]
            else:
                arguments[name] = _value(given, spec, name)
        except RequestProblem as err:
            problems += err.problems
    if problems:
        raise RequestProblem(problems)
    return arguments


def _value(given: Any, spec: dict[str, Any], name: str) -> Any:
    if isinstance(given, dict) and "href" in given and set(given) <= {"href", "rel", "type", "hreflang", "title"}:
        if spec.get("format") != "uri":
            raise RequestProblem([f"inputs.{name}: a link is accepted only for an input that is a file (format: uri)"])
        return given["href"]
    if isinstance(given, dict) and "value" in given and set(given) <= {"value", "mediaType", "encoding", "schema"}:
        if given.get("encoding") == "base64":
            raise RequestProblem([f"inputs.{name}: binary values are not accepted; give a link to the file"])
        return given["value"]
    return given


class Links:
    """How a result file of one execution is given by reference: a presigned https link on S3, else a link this API
    serves; an href outside the execution's folder (written under another results root) is said as it is.

    Args:
        store: the API's results store.
        base: the API's own address.
        process_id, execution_id: the execution.
    """

    def __init__(self, store: ResultsStore, base: str, process_id: str, execution_id: str):
        self.store = store
        self.base = base
        self.execution_id = execution_id
        self.own = store.execution_uri(process_id, execution_id)

    def __call__(self, href: str) -> str:
        presigned = self.store.presign(href, self.own)
        if presigned:
            return presigned
        relative = output_path_in(href, self.own) if href.startswith(self.own + "/") else None
        return output_url(self.base, self.execution_id, relative) if relative is not None else href


def outputs_document(
    definition: Definition,
    document: ResultsDocument,
    wanted: dict[str, OutputRequest],
    links: Links,
    read: Callable[[str], bytes],
) -> dict[str, Any]:
    """The job's results as OGC outputs: every output, or those asked for, each by value or by reference."""
    available = _outputs(definition, document)
    names = list(wanted) or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise RequestProblem([f"outputs.{name}: the process has no output {name!r}" for name in unknown])
    results = {}
    for name in names:
        mode = wanted[name].transmissionMode if name in wanted else None
        given = _transmitted(available[name], mode, links, read)
        if given is not None:  # no value is no output (OGC's results have no null)
            results[name] = given
    return results


class _Output(BaseModel):
    """One output before it is transmitted: files (assets) or a value."""

    files: list[dict[str, Any]] | None = None
    value: Any = None
    many: bool = False


def _outputs(definition: Definition, document: ResultsDocument) -> dict[str, _Output]:
    if isinstance(document, PipelineDocument) or not isinstance(definition, TaskDefinition):
        steps = document.model_dump(mode="json").get("steps")
        return {"steps": _Output(value=steps)}
    assets = [a.model_dump(mode="json") for a in document.results if "metadata" not in a.roles]
    outputs: dict[str, _Output] = {}
    for output in definition.outputs.files:
        outputs[output.name] = _Output(files=[a for a in assets if a.get("title") == output.name], many=output.multiple)
    value = document.value
    declared_values = definition.value_outputs
    for each in declared_values:
        if each.name in document.outputs:  # a Seed task's JSON output
            outputs[each.name] = _Output(value=document.outputs[each.name])
        elif isinstance(value, dict) and each.name in value:
            outputs[each.name] = _Output(value=value[each.name])
        else:
            outputs[each.name] = _Output(value=value if len(declared_values) == 1 else None)
    if not outputs:
        outputs = {"results": _Output(files=assets, many=True), "value": _Output(value=value)}
    return outputs


def _transmitted(output: _Output, mode: str | None, links: Links, read: Callable[[str], bytes]) -> Any:
    """An output as OGC's results give it: a value (an object as a qualified value: OGC's inline values are no
    objects), a file by link or by value, and several files as one qualified value holding their list (OGC 1.0's
    results have no arrays of their own)."""
    if output.files is None:  # a value is always given by value
        if isinstance(output.value, dict):
            return {"value": output.value, "mediaType": "application/json"}
        return output.value
    given = [_file(asset, mode, links, read) for asset in output.files]
    if output.many:
        return {"value": given, "mediaType": "application/json"}
    return given[0] if given else None


def _file(asset: dict[str, Any], mode: str | None, links: Links, read: Callable[[str], bytes]) -> dict[str, Any]:
    media_type = asset.get("type") or mimetypes.guess_type(asset["href"])[0] or "application/octet-stream"
    if mode != "value" or (asset.get("size") or 0) > MAX_INLINE:
        return {"href": links(asset["href"]), "type": media_type, "title": asset.get("title") or ""}
    content = read(asset["href"])
    if media_type.startswith(TEXT_TYPES):
        return {"value": content.decode(errors="replace"), "mediaType": media_type}
    return {"value": base64.b64encode(content).decode(), "encoding": "base64", "mediaType": media_type}
