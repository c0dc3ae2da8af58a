"""Writes the quickstart's sample scene: a synthetic 4-band (blue, green, red, near-infrared) GeoTIFF in UTM 33N,
512 x 512 pixels of 10 m (about 5 km a side), with fields of crops at different vigour, a forest, a river and a lake,
a town with its streets, and bare ground. The same scene every time (a fixed seed): the tests read it.

    python3 make_sample.py scene.tif
"""

import sys

import numpy as np
import rasterio
from rasterio.transform import from_origin

SIZE = 512
# Surface reflectance x 10,000 of each cover (blue, green, red, near-infrared), and how much it varies pixel to pixel.
COVERS = {
    "water": ((700, 600, 350, 180), 40),
    "bare": ((900, 1100, 1400, 1900), 120),
    "street": ((1300, 1300, 1400, 1150), 60),
    "roof": ((1100, 1200, 1500, 2100), 150),
    "forest": ((300, 550, 280, 3600), 250),
    "grass": ((450, 800, 600, 2800), 200),
}


def main(path: str) -> None:
    random = np.random.default_rng(20261203)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    bands = np.zeros((4, SIZE, SIZE), dtype="float64")

    def paint(where: np.ndarray, cover: str) -> None:
        (blue, green, red, nir), spread = COVERS[cover]
        for index, level in enumerate((blue, green, red, nir)):
            bands[index][where] = level + random.normal(0, spread, int(where.sum()))

    paint(np.ones((SIZE, SIZE), dtype=bool), "bare")
    # Fields: a grid of parcels, each sown with a crop of its own vigour (NDVI about 0.2 to 0.85).
    for top in range(0, SIZE, 64):
        for left in range(0, SIZE, 80):
            parcel = (rows >= top + 2) & (rows < top + 62) & (cols >= left + 2) & (cols < left + 78)
            vigour = random.uniform(0.1, 1.0)
            red = 1300 - 1000 * vigour
            nir = 1900 + 2200 * vigour
            bands[0][parcel] = 500 + random.normal(0, 60, int(parcel.sum()))
            bands[1][parcel] = 700 + 300 * vigour + random.normal(0, 60, int(parcel.sum()))
            bands[2][parcel] = red + random.normal(0, 90, int(parcel.sum()))
            bands[3][parcel] = nir + random.normal(0, 200, int(parcel.sum()))
    paint((rows < 180) & (cols > 330) & (np.hypot(rows - 60, cols - 460) > 40), "forest")
    town = (rows > 340) & (cols < 200)
    paint(town, "roof")
    paint(town & (((rows - 340) % 24 < 4) | (cols % 30 < 4)), "street")
    paint(town & (np.hypot(rows - 430, cols - 100) < 18), "grass")  # a park
    river = np.abs(cols - (260 + 40 * np.sin(rows / 45.0))) < 9 + 3 * np.sin(rows / 17.0)
    paint(river, "water")
    paint(np.hypot(rows - 60, cols - 460) < 34, "water")  # a lake in the forest
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 4650000, 10, 10),
        "compress": "deflate",
        "tiled": True,
    }
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.clip(bands, 1, 10000).astype("uint16"))
        out.descriptions = ("blue", "green", "red", "near-infrared")


if __name__ == "__main__":
    main(sys.argv[1])
