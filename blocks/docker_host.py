"""Saves a prefect-docker `DockerHost` block for the engine granary runs containers on.

    python blocks/docker_host.py local-engine unix:///var/run/docker.sock
    export GRANARY_DOCKER_HOST_BLOCK=local-engine      # then `granary serve` uses it

Without a block, granary uses the engine `DOCKER_HOST` names (the local socket by default).
"""

import sys

from prefect_docker.host import DockerHost


def main(name: str, base_url: str) -> None:
    DockerHost(base_url=base_url, max_pool_size=64).save(name, overwrite=True)
    print(f"saved DockerHost block {name!r} -> {base_url}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
