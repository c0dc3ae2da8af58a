"""Quicklooks: a small picture of each raster result, with its footprint in WGS 84, for the job's HTML page and the
Prefect run page.

Rasters are what containers wrote, so they are read in a container too, sandboxed like any task (no network,
read-only root, the raster mounted read-only): never by the runner itself. The image must have rasterio
(`GRANARY_QUICKLOOK_IMAGE`, by default the example's `granary/ndvi-base:1`); without it, no quicklook is made and
nothing else changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

RASTER_TYPES = ("image/tiff", "image/geotiff", "application/x-geotiff")
MAX_SIDE = 256
SCRIPT = r"""
import json, sys
import numpy, rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
source, target = sys.argv[1], sys.argv[2]
with rasterio.open(source) as raster:
    scale = max(raster.width, raster.height) / %(side)d
    shape = (max(1, int(raster.height / max(scale, 1))), max(1, int(raster.width / max(scale, 1))))
    bands = [1, 2, 3] if raster.count >= 3 else [1]
    data = raster.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average, masked=True).astype("float64")
    low, high = numpy.nanpercentile(data.filled(numpy.nan), [2, 98]) if data.count() else (0.0, 1.0)
    scaled = numpy.clip((data.filled(low) - low) / ((high - low) or 1) * 255, 0, 255).astype("uint8")
    bounds = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds) if raster.crs else None
with rasterio.open(target, "w", driver="PNG", width=shape[1], height=shape[0], count=len(bands), dtype="uint8") as png:
    png.write(scaled)
print(json.dumps({"bbox": bounds}))
""" % {"side": MAX_SIDE}


class Quicklook(BaseModel):
    """A picture of one raster result, and where that raster lies."""

    title: str
    href: str
    bbox: list[float] | None = None


def image() -> str:
    return os.environ.get("GRANARY_QUICKLOOK_IMAGE", "granary/ndvi-base:1")


def is_raster(asset: dict[str, Any]) -> bool:
    kind = (asset.get("type") or "").split(";")[0].strip()
    return kind in RASTER_TYPES or str(asset.get("href", "")).lower().endswith((".tif", ".tiff"))


def picture(client: Any, raster: Path, target: Path) -> list[float] | None:
    """Draw `raster` into the PNG `target` in a sandboxed container; return its WGS 84 bounds.

    Raises:
        RuntimeError: when the picture could not be made (no such image, not a raster); nothing is left.
    """
    from docker.errors import DockerException

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        output = client.containers.run(
            image(),
            ["python3", "-c", SCRIPT, f"/in/{raster.name}", f"/out/{target.name}"],
            volumes={str(raster): {"bind": f"/in/{raster.name}", "mode": "ro"},
                     str(target.parent): {"bind": "/out", "mode": "rw"}},
            network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
            tmpfs={"/tmp": "rw,size=64m"}, pids_limit=64, mem_limit="512m", nano_cpus=int(1e9),
            labels={"granary.quicklook": raster.name}, remove=True, stdout=True, stderr=False,
        )  # fmt: skip
    except DockerException as err:
        raise RuntimeError(f"no quicklook of {raster.name}: {err}") from err
    last = output.decode(errors="replace").strip().splitlines()[-1:] if output else []
    try:
        bbox = json.loads(last[0])["bbox"] if last else None
    except (ValueError, KeyError, TypeError):
        bbox = None
    return [float(v) for v in bbox] if bbox else None
