"""STAC for results: an Item per successful execution, and a Collection per task that links them all.

Geometry and times come from the outputs' side-cars; the Item carries the task, version, arguments and execution id
(with the processing extension), and one asset per result. Everything is validated offline with stac-pydantic
(pystac's own validator fetches schemas from the web).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime
from typing import Any

import pystac
from pystac.utils import datetime_to_str, str_to_datetime
from shapely.geometry import mapping, shape
from shapely.ops import unary_union
from stac_pydantic import Collection as CollectionModel
from stac_pydantic import Item as ItemModel

from granary_flows import layout
from granary_flows.sidecars import Sidecar
from granary_flows.store import ResultsStore

PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
ASSET_FIELDS = {"href", "title", "description", "type", "roles"}
WHOLE_WORLD = (-180.0, -90.0, 180.0, 90.0)
_collection_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def execution_item(document: dict[str, Any], sidecars: list[Sidecar]) -> pystac.Item:
    """The STAC Item of a successful execution.

    Args:
        document: the execution's results document (`ExecutionDocument` as JSON).
        sidecars: the valid side-cars among its results.
    """
    annotated_inputs = sorted({s.annotates_input for s in sidecars if s.annotates_input})
    outputs = [s for s in sidecars if not s.annotates_input]  # an input's annotation is not the results' footprint
    geometries = [shape(s.geometry) for s in outputs if s.geometry]
    footprint = unary_union(geometries) if geometries else None
    starts = [s.start for s in outputs if s.start]
    ends = [s.end for s in outputs if s.end]
    start, end = (min(starts), max(ends or starts)) if starts else (None, None)
    # One moment when the side-cars give one (or none: then when the execution finished), else their range.
    moment = datetime.fromisoformat(document["finished"]) if start is None else (start if start == end else None)
    properties = {
        "granary:task": document["task"],
        "granary:version": document["version"],
        "granary:execution_id": document["execution_id"],
        "granary:arguments": document["arguments"],
        "processing:software": {document["task"]: document["version"]},
        "granary:submitter": document.get("submitter"),
        "processing:datetime": document["finished"],
    }
    if annotated_inputs:
        properties["granary:annotated_inputs"] = annotated_inputs
    item = pystac.Item(
        id=document["execution_id"],
        geometry=mapping(footprint) if footprint is not None else None,
        bbox=list(footprint.bounds) if footprint is not None else None,
        datetime=moment,
        start_datetime=None if moment else start,
        end_datetime=None if moment else end,
        properties=properties,
        stac_extensions=[PROCESSING_EXTENSION],
        collection=document["task"],
    )
    described = {sidecar.describes: sidecar.properties for sidecar in outputs}
    keys: set[str] = set()
    for result in document["results"]:
        key = _unique_key(result.get("title") or result["href"].rsplit("/", 1)[-1], keys)
        extra = {k: v for k, v in described.get(result["href"], {}).items() if k not in ASSET_FIELDS}
        item.add_asset(
            key,
            pystac.Asset(
                href=result["href"],
                title=result.get("title"),
                description=result.get("description"),
                media_type=result.get("type"),
                roles=result.get("roles"),
                extra_fields=extra,
            ),
        )
    return item


def publish(store: ResultsStore, task: str, title: str | None, description: str | None, item: pystac.Item) -> str:
    """Write the Item beside the execution's outputs and add it to the task's Collection.

    The Collection is edited as JSON, and only what this call adds is validated: it links every Item the task ever
    produced, so parsing and validating it whole would cost each execution time in proportion to all the earlier ones.

    Returns:
        The Item's URI.
    """
    collection_link = f"../{layout.COLLECTION_FILE}"
    item.add_link(pystac.Link(rel="collection", target=collection_link, media_type=pystac.MediaType.JSON))
    item.add_link(pystac.Link(rel="parent", target=collection_link, media_type=pystac.MediaType.JSON))
    item_document = item.to_dict(include_self_link=False, transform_hrefs=False)
    ItemModel.model_validate(item_document)
    item_uri = store.write_json(layout.item_document(task, item.id), item_document)

    def add_item(found: dict[str, Any] | None) -> dict[str, Any]:
        collection = found or _new_collection(task, title, description)
        target = layout.item_link_from_collection(item.id)
        linked = {link["href"] for link in collection["links"] if link["rel"] == "item"}
        new_link = {"rel": "item", "href": target, "type": pystac.MediaType.GEOJSON.value}
        if target not in linked:
            collection["links"].append(new_link)
        _extend(collection["extent"], item, first=not linked - {target})
        # The Item links already there were validated when they were added.
        other_links = [link for link in collection["links"] if link["rel"] != "item"]
        CollectionModel.model_validate({**collection, "links": [*other_links, new_link]})
        return collection

    # One writer per task at a time among this process's threads; between processes, the store's update.
    with _collection_locks[task]:
        store.update_json(layout.collection_document(task), add_item)
    return item_uri


def unpublish(store: ResultsStore, task: str, execution_ids: set[str]) -> None:
    """Take removed executions' Items out of the task's Collection (its extent is left as it was)."""
    targets = {layout.item_link_from_collection(execution_id) for execution_id in execution_ids}

    def remove_items(found: dict[str, Any] | None) -> dict[str, Any] | None:
        if found is not None:
            found["links"] = [link for link in found.get("links", []) if link.get("href") not in targets]
        return found

    with _collection_locks[task]:
        store.update_json(layout.collection_document(task), remove_items)


def _new_collection(task: str, title: str | None, description: str | None) -> dict[str, Any]:
    return pystac.Collection(
        id=task,
        title=title,
        description=description or f"Results of the {task} task",
        extent=pystac.Extent(
            pystac.SpatialExtent([list(WHOLE_WORLD)]),
            pystac.TemporalExtent([[None, None]]),  # type: ignore[arg-type]
        ),
        license="other",
    ).to_dict(include_self_link=False, transform_hrefs=False)


def _extend(extent: dict[str, Any], item: pystac.Item, first: bool) -> None:
    """Grow the collection's extent to cover the item; the first item replaces the initial whole-world box."""
    if item.bbox:
        old = extent["spatial"]["bbox"][0]  # the first box covers all the others
        grown = [
            min(old[0], item.bbox[0]),
            min(old[1], item.bbox[1]),
            max(old[2], item.bbox[2]),
            max(old[3], item.bbox[3]),
        ]
        extent["spatial"]["bbox"] = [list(item.bbox) if first else grown]
    start = item.common_metadata.start_datetime or item.datetime
    end = item.common_metadata.end_datetime or item.datetime
    low, high = (str_to_datetime(moment) if moment else None for moment in extent["temporal"]["interval"][0])
    extent["temporal"]["interval"] = [
        [datetime_to_str(min(filter(None, (low, start)))), datetime_to_str(max(filter(None, (high, end))))]
    ]


def _unique_key(name: str, taken: set[str]) -> str:
    key, n = name, 2
    while key in taken:
        key, n = f"{name}-{n}", n + 1
    taken.add(key)
    return key
