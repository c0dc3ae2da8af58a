"""Writes a small 4-band (blue, green, red, near-infrared) GeoTIFF in UTM 33N: a field of vegetation beside water."""

import sys

import numpy as np
import rasterio
from rasterio.transform import from_origin

SIZE = 64


def main(path: str) -> None:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    vegetation = cols < SIZE // 2
    red = np.where(vegetation, 400, 900) + rows
    nir = np.where(vegetation, 3000, 300) + rows
    bands = np.stack([red // 2, red, red, nir]).astype("uint16")
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 4650000, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as out:
        out.write(bands)


if __name__ == "__main__":
    main(sys.argv[1])
