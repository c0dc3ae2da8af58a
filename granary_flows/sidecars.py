"""Seed side-cars: `<output>.metadata.json` beside an output, a GeoJSON Feature giving it a geometry and times.

Times are read as STAC writes them (`datetime`, `start_datetime`/`end_datetime`), as Seed does (`time: {start,
end}`) and as Scale's jobs do (`dataStarted`/`dataEnded`); the Feature's other properties are kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from geojson_pydantic import Feature
from pydantic import BaseModel, ValidationError

from granary_flows.contract import SIDECAR_SUFFIX
from granary_flows.results import ANNOTATES, ResultAsset


class Sidecar(BaseModel):
    """A valid side-car and the result it describes."""

    href: str
    annotates_input: str | None = None
    geometry: dict[str, Any] | None
    start: datetime | None
    end: datetime | None
    properties: dict[str, Any] = {}  # the Feature's other properties (Scale's dataTypes, ...)

    @property
    def describes(self) -> str:
        """The href of the output it describes."""
        return self.href.removesuffix(SIDECAR_SUFFIX)


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
        properties = dict(feature.properties or {})
        start, end = times_of(properties)
        geometry = feature.geometry.model_dump(mode="json", exclude_none=True) if feature.geometry else None
        sidecars.append(
            Sidecar(
                annotates_input=(asset.model_extra or {}).get(ANNOTATES),
                href=asset.href,
                geometry=geometry,
                start=start,
                end=end,
                properties={k: v for k, v in properties.items() if k not in TIME_PROPERTIES},
            )
        )
    return sidecars, warnings


TIME_PROPERTIES = ("datetime", "start_datetime", "end_datetime", "time", "dataStarted", "dataEnded")


def times_of(properties: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """STAC's `datetime` or `start_datetime`/`end_datetime`, Seed's `time: {start, end}`, or Scale's
    `dataStarted`/`dataEnded`.

    Example:
        >>> start, end = times_of({"dataStarted": "2018-06-01T00:00:00Z", "dataEnded": "2018-06-02T00:00:00Z"})
        >>> start.isoformat(), end.isoformat()
        ('2018-06-01T00:00:00+00:00', '2018-06-02T00:00:00+00:00')
    """
    time = properties.get("time")
    seed_time: dict[str, Any] = time if isinstance(time, dict) else {}
    start = (
        properties.get("start_datetime")
        or seed_time.get("start")
        or properties.get("dataStarted")
        or properties.get("datetime")
    )
    end = properties.get("end_datetime") or seed_time.get("end") or properties.get("dataEnded") or start
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
