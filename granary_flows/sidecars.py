"""Seed side-cars: `<output>.metadata.json` beside an output, a GeoJSON Feature giving it a geometry and times."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from geojson_pydantic import Feature
from pydantic import BaseModel, ValidationError

from granary_flows.results import ANNOTATES, SIDECAR_SUFFIX, ResultAsset


class Sidecar(BaseModel):
    """A valid side-car and the result it describes."""

    href: str
    annotates_input: str | None = None
    geometry: dict[str, Any] | None
    start: datetime | None
    end: datetime | None


def read_sidecars(assets: list[ResultAsset], read: Callable[[str], bytes]) -> tuple[list[Sidecar], list[str]]:
    """Read every side-car among the results, with `read` (the results store's reader, which holds its credentials).

    Returns:
        The valid side-cars, and one warning per broken one (the output it describes is kept all the same).
    """
    sidecars, warnings = [], []
    for asset in assets:
        if not asset.href.endswith(SIDECAR_SUFFIX):
            continue
        try:
            feature: Feature[Any, Any] = Feature.model_validate(json.loads(read(asset.href)))
        except (OSError, ValueError, ValidationError) as err:
            warnings.append(f"side-car {asset.href} is not a valid GeoJSON Feature: {_first_line(err)}")
            continue
        start, end = _times(feature.properties or {})
        geometry = feature.geometry.model_dump(mode="json", exclude_none=True) if feature.geometry else None
        sidecars.append(
            Sidecar(
                annotates_input=(asset.model_extra or {}).get(ANNOTATES),
                href=asset.href,
                geometry=geometry,
                start=start,
                end=end,
            )
        )
    return sidecars, warnings


def _times(properties: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """STAC's `datetime` or `start_datetime`/`end_datetime`, or Seed's `time: {start, end}`."""
    time = properties.get("time")
    seed_time: dict[str, Any] = time if isinstance(time, dict) else {}
    start = properties.get("start_datetime") or seed_time.get("start") or properties.get("datetime")
    end = properties.get("end_datetime") or seed_time.get("end") or start
    return _parse(start), _parse(end)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
