"""A Batch job for the tests: does what its arguments say, writing its outputs to OUTPUT_URI with boto3.

Runs in granary/ndvi:1 (Debian's python3-boto3, which predates AWS_ENDPOINT_URL: the endpoint is passed on).
"""

import json
import os
import sys
import time

import boto3

endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
if "GRANARY_ITEMS_URI" in os.environ:  # a child of an array job: its environment is its item's (README)
    bucket, _, key = os.environ["GRANARY_ITEMS_URI"].removeprefix("s3://").partition("/")
    items = json.loads(boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
    os.environ.update(items["items"][int(os.environ["AWS_BATCH_JOB_ARRAY_INDEX"])]["environment"])
args = json.loads(os.environ["GRANARY_ARGUMENTS"])
attempt = int(os.environ["GRANARY_ATTEMPT"])
s3 = boto3.client("s3", endpoint_url=endpoint)
bucket, _, prefix = os.environ["OUTPUT_URI"].removeprefix("s3://").partition("/")


def put(name: str, body: str) -> None:
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body.encode())


print(f"label={sys.argv[1] if len(sys.argv) > 1 else ''} attempt={attempt}", flush=True)
for number in range(1, args.get("lines", 0) + 1):
    print(f"line {number}")
sys.stdout.flush()
time.sleep(args.get("sleepFirstAttempt", 0) if attempt == 1 else 0)
time.sleep(args.get("sleep", 0))
seen = {name: os.environ.get(name) for name in ("GRANARY_ARGUMENTS", "LABEL", "LINES", "OUTPUT_URI", "OUTPUT_DIR")}
for name in args.get("write", []):
    put(name, f"{name} from attempt {attempt}\n")
    if args.get("sidecar"):
        feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [13.4, 52.5]}, "properties": {}}
        put(f"{name}.metadata.json", json.dumps(feature))
if args.get("write"):
    put("environment.json", json.dumps(seen))
if args.get("results"):
    put("results.json", json.dumps({"results": [{"href": "a.txt", "title": "named", "roles": ["data"]}]}))
if "message" in args:
    put("results.json", json.dumps({"message": args["message"]}))
if args.get("plugin"):
    print(json.dumps({"plugin_results": {"answer": 42, "attempt": attempt}}))
sys.exit(args.get("exit", 0))
