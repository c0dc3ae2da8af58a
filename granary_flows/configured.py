"""Settings an operator shares between hosts: read when used, from the Prefect block an environment variable names,
else from the environment itself.

The block is read as a plain block document, so that this module (and the modules that ask for a policy or for the
API's authentication) need not import the block classes of `blocks`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from granary_flows.errors import GranaryError

Settings = TypeVar("Settings", bound=BaseModel)


def from_block_or_environment(
    variable: str, block_type: str, model: type[Settings], from_environment: Callable[[], Settings]
) -> Settings:
    """The settings `model` from the block named in `$variable`, or from the environment when none is named.

    Args:
        variable: the environment variable naming the block, e.g. `GRANARY_POLICY_BLOCK`.
        block_type: the block type's slug, e.g. `granary-policy`.
        model: the settings' model; the block's fields outside it are ignored.
        from_environment: the settings when no block is named.

    Raises:
        GranaryError: the block named does not exist or does not hold such settings.
    """
    name = os.environ.get(variable)
    if not name:
        return from_environment()
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from pydantic import ValidationError

    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(name=name, block_type_slug=block_type)
        return model.model_validate({key: value for key, value in document.data.items() if key in model.model_fields})
    except ObjectNotFound as err:
        raise GranaryError(f"{variable} names the {block_type} block {name!r}, which does not exist") from err
    except ValidationError as err:
        raise GranaryError(f"the {block_type} block {name!r} ({variable}) is not valid: {err}") from err
