"""Draws a quicklook of a raster: run by `quicklook.picture` inside a sandboxed container (Python with rasterio, NumPy
and Pillow), never imported by granary itself (this folder is not a package: it holds what runs in containers).

    python3 -c "$(cat granary_flows/containers/quicklook.py)" SOURCE.tif TARGET.png TITLE

Three bands or more: the first three as red, green and blue, each stretched between its 2nd and 98th percentile.
One band: a colour ramp with a legend under the picture. Values within [-1, 1] (an index such as NDVI) take the
vegetation ramp over exactly that range, from water (blue) through bare and built-up ground (brown) to dense
vegetation (dark green); anything else a perceptual ramp between its 2nd and 98th percentile. No-data is transparent.
Prints `{"bbox": [west, south, east, north]}` (WGS 84) on its last line.
"""

import json
import sys

import numpy
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

SIDE = 512  # the picture's longer side, in pixels
INDEX_RAMP = [  # value, RGB: for indices within [-1, 1]
    (-1.0, (8, 48, 107)),
    (-0.2, (107, 158, 204)),
    (0.0, (196, 170, 128)),
    (0.15, (236, 220, 140)),
    (0.3, (171, 214, 103)),
    (0.5, (84, 171, 72)),
    (0.7, (26, 120, 44)),
    (1.0, (0, 68, 27)),
]
PERCEPTUAL_RAMP = [  # fraction of the range, RGB (viridis' stops)
    (0.0, (68, 1, 84)),
    (0.25, (59, 82, 139)),
    (0.5, (33, 145, 140)),
    (0.75, (94, 201, 98)),
    (1.0, (253, 231, 37)),
]


def main(source: str, target: str, title: str) -> None:
    with rasterio.open(source) as raster:
        scale = max(raster.width, raster.height) / SIDE
        shape = (max(1, round(raster.height / scale)), max(1, round(raster.width / scale)))
        bands = [1, 2, 3] if raster.count >= 3 else [1]
        resampling = Resampling.average if scale > 1 else Resampling.nearest
        data = raster.read(bands, out_shape=(len(bands), *shape), resampling=resampling, masked=True)
        data = data.astype("float64")
        bounds = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds) if raster.crs else None
        label = title or (raster.descriptions[0] if raster.descriptions and raster.descriptions[0] else "value")
    picture = Image.fromarray(true_colour(data), "RGBA") if len(bands) == 3 else with_legend(*ramped(data[0]), label)
    # A palette of 256 colours: a quarter of the size of RGBA, and nothing a quicklook needs is lost.
    picture.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, "PNG", optimize=True)
    print(json.dumps({"bbox": list(bounds) if bounds else None}))


def true_colour(data):
    layers = []
    for band in data:
        low, high = numpy.nanpercentile(band.filled(numpy.nan), [2, 98]) if band.count() else (0.0, 1.0)
        layers.append(numpy.clip((band.filled(low) - low) / ((high - low) or 1) * 255, 0, 255))
    alpha = numpy.where(numpy.ma.getmaskarray(data).any(axis=0), 0, 255)
    return numpy.dstack([*layers, alpha]).astype("uint8")


def ramped(band):
    """The band coloured, and the ramp and range its legend shows."""
    values = band.compressed()
    if values.size and values.min() >= -1 and values.max() <= 1:
        ramp, low, high = INDEX_RAMP, -1.0, 1.0
    else:
        low, high = numpy.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        high = high if high > low else low + 1
        ramp = [(low + fraction * (high - low), colour) for fraction, colour in PERCEPTUAL_RAMP]
    rgba = numpy.dstack([*colour_of(band.filled(low), ramp), numpy.where(numpy.ma.getmaskarray(band), 0, 255)])
    return Image.fromarray(rgba.astype("uint8"), "RGBA"), ramp, low, high


def colour_of(values, ramp):
    stops = [value for value, _ in ramp]
    return [numpy.interp(values, stops, [colour[channel] for _, colour in ramp]) for channel in range(3)]


def with_legend(picture, ramp, low, high, label):
    """The picture over a white strip holding the ramp as a bar, its range's ticks and the band's name."""
    width = max(picture.width, 320)
    bar_width, bar_height, strip = width - 40, 14, 64
    canvas = Image.new("RGBA", (width, picture.height + strip), (255, 255, 255, 255))
    canvas.paste(picture, ((width - picture.width) // 2, 0), picture)
    steps = numpy.linspace(low, high, bar_width)
    bar = numpy.dstack([*colour_of(steps, ramp), numpy.full(bar_width, 255)]).astype("uint8")
    bar = Image.fromarray(numpy.repeat(bar, bar_height, axis=0), "RGBA")
    top = picture.height + 10
    canvas.paste(bar, (20, top))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    ticks = [low, (low + high) / 2, high]
    for index, value in enumerate(ticks):
        x = 20 + round(index * (bar_width - 1) / (len(ticks) - 1))
        draw.line([(x, top + bar_height), (x, top + bar_height + 4)], fill=(40, 40, 40, 255))
        text = f"{value:.2g}"
        draw.text((x - draw.textlength(text, font=font) / 2, top + bar_height + 6), text, fill=(40, 40, 40, 255),
                  font=font)  # fmt: skip
    draw.text((20, top + bar_height + 22), label, fill=(40, 40, 40, 255), font=font)
    return canvas


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
