"""The cost of adding an execution's Item to its task's STAC Collection, against the number of Items it links.

    .venv/bin/python bench/stac.py [--sizes 100,2000,10000] [--publishes 20]

For each size, a Collection that links that many Items is written to a local results folder, then `--publishes`
more Items are added to it: by granary's `stac.publish`, and, on a copy, the way granary did it before (pystac parses
the whole Collection, adds the link and widens the time extent, and the whole of it is validated with stac-pydantic
and written indented). Printed: CPU milliseconds per publish of each, their ratio, and granary's cost against its own
at the smallest size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pystac
from stac_pydantic import Collection as CollectionModel

from granary_flows import layout, stac
from granary_flows.store import ResultsStore

TASK = "crowded"


def an_item(number: int) -> pystac.Item:
    point = {"type": "Point", "coordinates": [15.0, 42.0]}
    return pystac.Item(f"execution-{number}", point, [15.0, 42.0, 15.0, 42.0], datetime.now(timezone.utc), {})


def collection_of(store: ResultsStore, size: int) -> None:
    """A Collection as `size` publishes would leave it, written at once (publishing them one by one takes minutes)."""
    stac.publish(store, TASK, None, None, an_item(0))
    document = store.read_json(layout.collection_document(TASK))
    for number in range(1, size):
        link = {"rel": "item", "href": layout.item_link_from_collection(f"execution-{number}")}
        document["links"].append(link | {"type": pystac.MediaType.GEOJSON.value})
    store.write_json(layout.collection_document(TASK), document)


def former_publish(store: ResultsStore, item: pystac.Item) -> None:
    """granary's publish before it edited the Collection as JSON (the Item document is left out: it is unchanged)."""
    collection = pystac.Collection.from_dict(store.read_json(layout.collection_document(TASK)), preserve_dict=False)
    collection.add_link(
        pystac.Link(rel="item", target=layout.item_link_from_collection(item.id), media_type=pystac.MediaType.GEOJSON)
    )
    low, high = collection.extent.temporal.intervals[0]
    collection.extent.temporal.intervals = [
        [min(filter(None, (low, item.datetime))), max(filter(None, (high, item.datetime)))]
    ]
    document = collection.to_dict(include_self_link=False, transform_hrefs=False)
    CollectionModel.model_validate(document)
    store.write_json(layout.collection_document(TASK), document)


def granary_publish(store: ResultsStore, item: pystac.Item) -> None:
    stac.publish(store, TASK, None, None, item)


def cpu_ms_per_publish(size: int, publish: Callable[[ResultsStore, pystac.Item], None], publishes: int) -> float:
    with tempfile.TemporaryDirectory(prefix="granary-bench-stac-") as folder:
        store = ResultsStore(folder)
        collection_of(store, size)
        started = time.process_time()
        for number in range(size, size + publishes):
            publish(store, an_item(number))
        return (time.process_time() - started) / publishes * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,2000,10000", help="Items the Collection links before the publishes")
    parser.add_argument("--publishes", type=int, default=20)
    arguments = parser.parse_args()
    sizes = [int(size) for size in arguments.sizes.split(",")]
    cpu_ms_per_publish(1, granary_publish, 1)  # imports and caches, before anything is timed
    print(f"{'Items linked':>12} | {'granary ms':>10} | {'former ms':>9} | {'ratio':>6} | granary against itself")
    smallest = None
    for size in sizes:
        granary = cpu_ms_per_publish(size, granary_publish, arguments.publishes)
        former = cpu_ms_per_publish(size, former_publish, arguments.publishes)
        smallest = smallest or granary
        print(
            f"{size:>12,} | {granary:>10.1f} | {former:>9.1f} | {granary / former:>5.2f}x | {granary / smallest:.1f}x"
        )


if __name__ == "__main__":
    main()
