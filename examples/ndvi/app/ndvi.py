"""NDVI = (NIR - red) / (NIR + red) from two bands of a GeoTIFF.

Follows the granary container contract: arguments in GRANARY_ARGUMENTS, outputs to OUTPUT_DIR (local Docker) or
OUTPUT_URI (AWS Batch, where the job reads its s3:// input and writes its outputs itself), progress as JSON lines on
stdout, a GeoJSON side-car beside the output giving its footprint in EPSG:4326.
"""

import json
import os
import sys
import tempfile
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


def s3_client():
    import boto3  # only on Batch; Debian's boto3 predates AWS_ENDPOINT_URL, so it is passed on by hand

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def local_copy(source: str, folder: str) -> str:
    """An s3:// input is downloaded first (on Batch, nothing stages inputs); anything else is opened as it is."""
    if not source.startswith("s3://"):
        return source
    path = os.path.join(folder, os.path.basename(source) or "input.tif")
    s3_client().download_file(*split_s3(source), path)
    return path


def publish(folder: str, output_uri: str) -> None:
    bucket, prefix = split_s3(output_uri.rstrip("/"))
    for name in sorted(os.listdir(folder)):
        s3_client().upload_file(os.path.join(folder, name), bucket, f"{prefix}/{name}")


def main() -> int:
    args = json.loads(os.environ["GRANARY_ARGUMENTS"])
    output_uri = os.environ.get("OUTPUT_URI")
    scratch = tempfile.mkdtemp()
    outputs = os.path.join(scratch, "outputs") if output_uri else os.environ["OUTPUT_DIR"]
    os.makedirs(outputs, exist_ok=True)
    status = compute(args, local_copy(args["tiffLocation"], scratch), outputs)
    if status == 0 and output_uri:
        publish(outputs, output_uri)
    return status


def compute(args: dict, source: str, outputs: str) -> int:
    output = os.path.join(outputs, args.get("outputName") or "ndvi.tif")
    with rasterio.open(source) as dataset:
        if max(args["redBand"], args["nirBand"]) > dataset.count:
            print(f"{args['tiffLocation']} has {dataset.count} bands", file=sys.stderr)
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
