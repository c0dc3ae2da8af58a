"""Builds granary/seed-random:1: the hello image plus random.sh, with the Seed manifest in its label.

Run by scripts/setup.sh through the Docker API's classic builder (no registry, no BuildKit needed):
    .venv/bin/python examples/seed-random/build.py
"""

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
TAG = "granary/seed-random:1"


def main() -> None:
    manifest = json.loads((HERE / "seed.manifest.json").read_text())
    script = (HERE / "random.sh").read_bytes()
    recipe = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode() + script).hexdigest()[:16]
    client = docker.from_env()
    try:
        if client.images.get(TAG).labels.get("granary.recipe") == recipe:
            return
    except docker.errors.ImageNotFound:
        pass
    dockerfile = "\n".join(
        [
            "FROM granary/hello:1",
            "COPY random.sh /app/random.sh",
            'CMD ["/bin/sh", "/app/random.sh"]',
            "",
        ]
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (("Dockerfile", dockerfile, 0o644), ("random.sh", script, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    # Labels through the API, not a Dockerfile LABEL, which would expand the manifest's ${...} itself.
    labels = {"com.ngageoint.seed.manifest": json.dumps(manifest), "granary.recipe": recipe}
    client.images.build(fileobj=context, custom_context=True, tag=TAG, rm=True, labels=labels)
    print(f"built {TAG}", file=sys.stderr)


if __name__ == "__main__":
    main()
