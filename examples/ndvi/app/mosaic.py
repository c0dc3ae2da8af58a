"""Mosaics NDVI tiles into one GeoTIFF and reports NDVI statistics over it.

Follows the granary container contract: arguments in GRANARY_ARGUMENTS (on local Docker the tiles are staged and
their paths given), the mosaic written to OUTPUT_DIR, and the statistics as the last stdout line
`{"plugin_results": {...}}`, which becomes the execution's value.
"""

import json
import os

import numpy as np
import rasterio
from rasterio.merge import merge


def main() -> None:
    arguments = json.loads(os.environ["GRANARY_ARGUMENTS"])
    tiles = [rasterio.open(path) for path in arguments["rasters"]]
    print(f"mosaicking {len(tiles)} tile(s)", flush=True)
    mosaic, transform = merge(tiles, nodata=np.nan)
    profile = tiles[0].profile | {
        "height": mosaic.shape[1],
        "width": mosaic.shape[2],
        "transform": transform,
        "nodata": np.nan,
    }
    name = arguments.get("outputName", "mosaic.tif")
    with rasterio.open(os.path.join(os.environ["OUTPUT_DIR"], name), "w", **profile) as out:
        out.write(mosaic)
    values = mosaic[0][np.isfinite(mosaic[0])]
    threshold = arguments.get("vegetationThreshold", 0.3)
    statistics = {
        "tiles": len(tiles),
        "pixels": int(values.size),
        "mean": round(float(values.mean()), 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
        "vegetated": round(float((values > threshold).mean()), 4),
    }
    print(json.dumps({"plugin_results": statistics}), flush=True)


if __name__ == "__main__":
    main()
