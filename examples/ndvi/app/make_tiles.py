"""Cuts a GeoTIFF into a grid of tiles (2 x 2 by default), each keeping its place on the map: the inputs of the
ndvi-tiles pipeline."""

import sys
from pathlib import Path

import rasterio
from rasterio.windows import Window


def main(source: str, folder: str, per_side: int = 2) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    with rasterio.open(source) as scene:
        width, height = scene.width // per_side, scene.height // per_side
        for row in range(per_side):
            for col in range(per_side):
                window = Window(col * width, row * height, width, height)
                profile = scene.profile | {
                    "width": width,
                    "height": height,
                    "transform": scene.window_transform(window),
                }
                with rasterio.open(f"{folder}/tile-{row}-{col}.tif", "w", **profile) as tile:
                    tile.write(scene.read(window=window))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
