"""STAC Items and Collections for results, and the side-cars they are built from: real executions, offline checks."""

import json
from pathlib import Path
from urllib.parse import urlparse

import pystac
from helpers import SAMPLE_TIFF, artifacts_of, execute
from stac_pydantic import Collection as CollectionModel
from stac_pydantic import Item as ItemModel


def local(href: str) -> Path:
    return Path(urlparse(href).path)


def test_an_ndvi_execution_has_a_stac_item_with_the_geotiffs_real_footprint(client, runner):
    flow_run = execute(client, "ndvi", redBand=3, nirBand=4, tiffLocation=SAMPLE_TIFF.as_uri())
    document = flow_run.state.result()
    item = json.loads(local(document["stac_item"]).read_text())
    ItemModel.model_validate(item)
    west, south, east, north = item["bbox"]
    # the sample is 512 x 10 m pixels from 500000 E / 4650000 N in UTM 33N: 15.0 E, 42.0 N and about 5.1 km across
    assert (round(west, 4), round(north, 3)) == (15.0, 42.002)
    assert 0.060 < east - west < 0.064 and 0.044 < north - south < 0.048
    assert item["geometry"]["type"] == "Polygon"
    assert item["properties"]["granary:task"] == "ndvi" and item["properties"]["granary:version"] == "1.0.0"
    assert item["properties"]["granary:arguments"]["redBand"] == 3
    assert item["properties"]["processing:software"] == {"ndvi": "1.0.0"}
    assert item["assets"]["ndvi"]["type"] == "image/tiff; application=geotiff"
    assert item["assets"]["ndvi"]["roles"] == ["data"]
    assert item["collection"] == "ndvi"
    [report] = [a.data for a in artifacts_of(client, flow_run.id) if a.key == "ndvi-results"]
    assert "STAC Item: [granary-item.json](" in report, "the Item is linked from the execution's report"


def test_the_item_footprint_and_times_are_the_union_of_the_side_cars_and_a_broken_one_is_a_warning(client, runner):
    flow_run = execute(client, "footprints")
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert len(document["warnings"]) == 1 and "broken.txt.metadata.json" in document["warnings"][0]
    assert "broken.txt" in {r["title"] for r in document["results"]}  # the output is kept all the same
    item = pystac.Item.from_dict(json.loads(local(document["stac_item"]).read_text()))
    assert item.bbox == [0.0, 0.0, 2.0, 1.0]
    assert item.geometry["type"] == "Polygon"  # the two adjacent squares merge into one
    assert item.datetime is None
    assert item.common_metadata.start_datetime.isoformat() == "2020-01-01T00:00:00+00:00"
    assert item.common_metadata.end_datetime.isoformat() == "2020-01-05T00:00:00+00:00"


def test_an_execution_without_side_cars_still_has_an_item_dated_when_it_finished(client, runner):
    document = execute(client, "hello", name="stac").state.result()
    item = json.loads(local(document["stac_item"]).read_text())
    ItemModel.model_validate(item)
    assert item["geometry"] is None and "bbox" not in item
    assert item["properties"]["datetime"].startswith(document["finished"][:19])


def test_the_task_collection_links_every_item_so_pystac_can_walk_all_results(client, runner, results_root):
    ids = [str(execute(client, "footprints").id) for _ in range(2)]
    path = results_root / "footprints" / "collection.json"
    CollectionModel.model_validate(json.loads(path.read_text()))
    collection = pystac.Collection.from_file(str(path))
    walked = {item.id for item in collection.get_items()}
    assert set(ids) <= walked
    assert collection.extent.spatial.bboxes == [[0.0, 0.0, 2.0, 1.0]]
    [[start, end]] = collection.extent.temporal.intervals
    assert start.isoformat() == "2020-01-01T00:00:00+00:00" and end.isoformat() == "2020-01-05T00:00:00+00:00"


def _publish_one(root: str, number: int) -> None:
    from datetime import datetime, timezone

    from granary_flows import stac
    from granary_flows.store import ResultsStore

    item = pystac.Item(f"execution-{number}", None, None, datetime.now(timezone.utc), {})
    stac.publish(ResultsStore(root), "crowded", "Crowded", None, item)


def test_executions_in_many_processes_each_add_their_item_to_the_collection(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    from granary_flows import layout

    with ProcessPoolExecutor(6) as pool:  # as several workers, or Prefect's process per run, on one results folder
        list(pool.map(_publish_one, [str(tmp_path)] * 60, range(60)))
    collection = json.loads((tmp_path / "crowded" / "collection.json").read_text())
    CollectionModel.model_validate(collection)
    items = sorted(link["href"] for link in collection["links"] if link["rel"] == "item")
    assert items == sorted(f"./execution-{n}/{layout.ITEM_FILE}" for n in range(60))  # no update lost, none half-read
