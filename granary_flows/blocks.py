"""granary's Prefect blocks: the registered definition of each task, the operator's policy, and how the HTTP API
identifies users.

All three live in Prefect's database, so that every runner and API instance on every host sees the same: `prefect
block register -m granary_flows.blocks` lists them in the UI's block catalog (`granary register` registers them
itself). Each block holds the fields of a model defined once (`Entry` here, `policy.Policy`, `auth.AuthSettings`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

from granary_flows.auth import AUTH_BLOCK_TYPE, AuthSettings
from granary_flows.definition import TaskDefinition
from granary_flows.pipeline import PipelineDefinition
from granary_flows.policy import POLICY_BLOCK_TYPE, Policy

TASK_BLOCK_TYPE = "granary-task"


class Entry(BaseModel):
    """One registered task or pipeline, as the registry keeps it beside its deployment."""

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
    deployment_id: UUID | None = Field(default=None, description="Its deployment.")

    def model(self) -> TaskDefinition | PipelineDefinition:
        """The definition as a checked model (a pipeline's steps not yet linked to their tasks)."""
        if self.kind == "pipeline":
            return PipelineDefinition.model_validate(self.definition | {"source": self.source})
        return TaskDefinition.model_validate(self.definition | {"source": self.source})

    @property
    def deployment_version(self) -> str:
        """The version its deployment carries: the definition's, and a digest of what was registered (SemVer's build
        metadata). Every run records its deployment's version when it is created, so a runner that holds a
        definition knows whether it is the one the run was created under without reading it again.

        Example:
            >>> entry = Entry(name="a", kind="task", version="1.0.0", runtime="docker", source_format="granary-flows",
            ...               source="a.yaml", definition={"name": "a"}, document={}, registered=datetime.now())
            >>> entry.deployment_version
            '1.0.0+7639bdf8e5ec'
        """
        registered = json.dumps([self.definition, self.source], sort_keys=True)
        return f"{self.version}+{hashlib.sha256(registered.encode()).hexdigest()[:12]}"

    @property
    def access(self) -> list[str]:
        """The roles that may run it (none: every authenticated user)."""
        return [str(role) for role in self.definition.get("access") or []]


class GranaryTask(Block, Entry):
    """A task or pipeline registered with granary, beside its deployment: the definition every runner executes,
    whatever host it is on, and the document it was registered from.

    Example:
        >>> GranaryTask.load("ndvi").definition["runtime"]  # doctest: +SKIP
    """

    _block_type_name: ClassVar[str] = "Granary task"
    _block_type_slug: ClassVar[str] = TASK_BLOCK_TYPE
    _description: ClassVar[str] = "A containerized algorithm (or pipeline) registered with granary-flows."
    _logo_url: ClassVar[Any] = None


class GranaryPolicy(Block, Policy):
    """What granary's runners may read, fetch and copy on a user's behalf (see `policy.Policy` for each field),
    shared by every runner that names it in `GRANARY_POLICY_BLOCK`."""

    _block_type_name: ClassVar[str] = "Granary policy"
    _block_type_slug: ClassVar[str] = POLICY_BLOCK_TYPE
    _description: ClassVar[str] = "Where granary-flows may fetch inputs from, and how much it may copy."
    _logo_url: ClassVar[Any] = None


class GranaryAuth(Block, AuthSettings):
    """How `granary api` identifies users (see `auth.AuthSettings` for each field), shared by every API instance that
    names it in `GRANARY_AUTH_BLOCK`."""

    _block_type_name: ClassVar[str] = "Granary API authentication"
    _block_type_slug: ClassVar[str] = AUTH_BLOCK_TYPE
    _description: ClassVar[str] = "OIDC issuer and audience, or a static tokens file, for granary-flows' HTTP API."
    _logo_url: ClassVar[Any] = None
