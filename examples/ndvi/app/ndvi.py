"""NDVI = (NIR - red) / (NIR + red) from two bands of a GeoTIFF.

Follows the granary container contract: arguments in GRANARY_ARGUMENTS, outputs to OUTPUT_DIR, progress as
JSON lines on stdout, a GeoJSON side-car beside the output giving its footprint in EPSG:4326.
"""

import json
import os
import sys
from datetime import datetime, timezone

import numpy as np
import rasterio
from rasterio.warp import transform_geom


def progress(percent: int, message: str) -> None:
    print(json.dumps({"progress": percent, "message": message}), flush=True)


def footprint(dataset) -> dict:
    left, bottom, right, top = dataset.bounds
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    return transform_geom(dataset.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})


def main() -> int:
    args = json.loads(os.environ["GRANARY_ARGUMENTS"])
    source = args["tiffLocation"]
    output = os.path.join(os.environ["OUTPUT_DIR"], args.get("outputName") or "ndvi.tif")
    with rasterio.open(source) as dataset:
        if max(args["redBand"], args["nirBand"]) > dataset.count:
            print(f"{source} has {dataset.count} bands", file=sys.stderr)
            return 3
        progress(10, "reading bands")
        red = dataset.read(args["redBand"]).astype("float32")
        nir = dataset.read(args["nirBand"]).astype("float32")
        progress(50, "computing NDVI")
        total = nir + red
        ndvi = np.where(total == 0, 0, (nir - red) / np.where(total == 0, 1, total)).astype("float32")
        profile = dataset.profile | {"count": 1, "dtype": "float32", "driver": "GTiff", "compress": "deflate"}
        with rasterio.open(output, "w", **profile) as out:
            out.write(ndvi, 1)
        geometry = footprint(dataset)
    sidecar = {
        "type": "Feature",
        "geometry": geometry,
        "properties": {
            "datetime": datetime.now(timezone.utc).isoformat(),
            "ndvi:min": float(ndvi.min()),
            "ndvi:max": float(ndvi.max()),
        },
    }
    with open(output + ".metadata.json", "w") as handle:
        json.dump(sidecar, handle)
    progress(100, f"wrote {os.path.basename(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
