"""moto's server, with Batch array jobs behaving as AWS Batch's do. moto 5.2.5 differs in two ways that a mapped
pipeline step run as one array job meets (measured against moto 5.2.5 on the local engine):

- a child job gets `AWS_BATCH_JOB_ARRAY_INDEX`, its index in the array; moto sets only `AWS_BATCH_JOB_ID`
  (`<parent>:<index>`);
- terminating an array job terminates its children; moto stops only the parent, which runs nothing itself.

    python tests/moto_server.py -H 127.0.0.1 -p 5000    # moto.server's own arguments
"""

from __future__ import annotations

import sys
from typing import Any

from moto.batch import models
from moto.server import main

_container_property = models.Job._get_container_property
_terminate = models.Job.terminate


def _with_array_index(self: models.Job, name: str, default: Any) -> Any:
    found = _container_property(self, name, default)
    index = (self.array_properties or {}).get("index")
    if name != "environment" or index is None:
        return found
    others = [variable for variable in found if variable["name"] != "AWS_BATCH_JOB_ARRAY_INDEX"]
    return [*others, {"name": "AWS_BATCH_JOB_ARRAY_INDEX", "value": str(index)}]


def _terminate_with_children(self: models.Job, reason: str) -> None:
    _terminate(self, reason)
    for child in self._child_jobs or []:
        _terminate(child, reason)


models.Job._get_container_property = _with_array_index  # type: ignore[method-assign]
models.Job.terminate = _terminate_with_children  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
