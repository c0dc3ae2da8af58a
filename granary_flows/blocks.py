"""granary's Prefect blocks: the registered definition of each task, and the operator's policy.

Both live in Prefect's database, so that every runner on every host sees the same: `prefect block register -m
granary_flows.blocks` lists them in the UI's block catalog (`granary register` registers them itself).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from granary_flows.api.identity import AUTH_BLOCK_VARIABLE, AuthSettings, auth_from_environment
from granary_flows.policy import Policy, policy_from_environment

POLICY_BLOCK_VARIABLE = "GRANARY_POLICY_BLOCK"


class GranaryTask(Block):
    """A task or pipeline registered with granary, beside its deployment: the definition every runner executes,
    whatever host it is on, and the document it was registered from.

    Example:
        >>> GranaryTask.load("ndvi").definition["runtime"]  # doctest: +SKIP
    """

    _block_type_name: ClassVar[str] = "Granary task"
    _block_type_slug: ClassVar[str] = "granary-task"
    _description: ClassVar[str] = "A containerized algorithm (or pipeline) registered with granary-flows."
    _logo_url: ClassVar[Any] = None

    name: str = Field(description="The task's name: its flow and deployment name.")
    kind: str = Field(description="task or pipeline.")
    version: str = Field(description="The version registered last.")
    title: str | None = Field(default=None, description="The task's title.")
    runtime: str = Field(description="docker, batch or pipeline.")
    source_format: str = Field(description="The format it was registered in: granary-flows, granary, seed, ...")
    source: str = Field(description="Where it was registered from: a file, or the HTTP API.")
    work_pool: str | None = Field(default=None, description="The work pool of its deployment; none for `serve`.")
    definition: dict[str, Any] = Field(description="The checked definition, in granary's task file shape.")
    document: dict[str, Any] = Field(description="The document as it was given.")
    registered: datetime = Field(description="When it was registered.")
    registered_by: str | None = Field(default=None, description="Who registered it, through the HTTP API.")
    image_digest: str | None = Field(default=None, description="The image digest pinned at registration, if any.")
    deployment_id: str | None = Field(default=None, description="Its deployment.")


class GranaryPolicy(Block, Policy):
    """What granary's runners may read, fetch and copy on a user's behalf (see `policy.Policy` for each field),
    shared by every runner that names it in `GRANARY_POLICY_BLOCK`."""

    _block_type_name: ClassVar[str] = "Granary policy"
    _block_type_slug: ClassVar[str] = "granary-policy"
    _description: ClassVar[str] = "Where granary-flows may fetch inputs from, and how much it may copy."
    _logo_url: ClassVar[Any] = None


def current_policy() -> Policy:
    """The policy of this process: the `GranaryPolicy` block named by `GRANARY_POLICY_BLOCK`, else the environment."""
    return _from_block_or_environment(POLICY_BLOCK_VARIABLE, GranaryPolicy, Policy, policy_from_environment)


def _from_block_or_environment(variable: str, block_type: type[Block], model: type[Any], from_environment: Any) -> Any:
    """The settings `model` from the block named in `variable`, or from the environment when none is named."""
    name = os.environ.get(variable)
    if not name:
        return from_environment()
    block = block_type.load(name)
    return model.model_validate(block.model_dump(include=set(model.model_fields)))


class GranaryAuth(Block, AuthSettings):
    """How `granary api` identifies users (see `api.identity.AuthSettings` for each field), shared by every API
    instance that names it in `GRANARY_AUTH_BLOCK`."""

    _block_type_name: ClassVar[str] = "Granary API authentication"
    _block_type_slug: ClassVar[str] = "granary-auth"
    _description: ClassVar[str] = "OIDC issuer and audience, or a static tokens file, for granary-flows' HTTP API."
    _logo_url: ClassVar[Any] = None


def current_auth() -> AuthSettings:
    """How this API identifies users: the `GranaryAuth` block named by `GRANARY_AUTH_BLOCK`, else the environment."""
    return _from_block_or_environment(AUTH_BLOCK_VARIABLE, GranaryAuth, AuthSettings, auth_from_environment)
