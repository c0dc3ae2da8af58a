"""Quicklooks: a small picture of each raster result, with its footprint in WGS 84, for the job's HTML page and the
Prefect run page.

Rasters are what containers wrote, so they are read in a container too, sandboxed like any task (no network,
read-only root, the raster mounted read-only): never by the runner itself. The image must have rasterio and Pillow
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
SCRIPT = Path(__file__).with_name("containers") / "quicklook.py"  # runs in the container, not here


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


def picture(client: Any, raster: Path, target: Path, title: str = "") -> list[float] | None:
    """Draw `raster` into the PNG `target` in a sandboxed container (`containers/quicklook.py`: a colour ramp and
    its legend for one band, true colour for three); return its WGS 84 bounds.

    Raises:
        RuntimeError: when the picture could not be made (no such image, not a raster); nothing is left.
    """
    from docker.errors import DockerException

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        output = client.containers.run(
            image(),
            ["python3", "-c", SCRIPT.read_text(), f"/in/{raster.name}", f"/out/{target.name}", title],
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
