"""The registry of tasks and pipelines, kept in Prefect: each is a deployment, with its definition in a `GranaryTask`
block beside it, so that a runner on any host executes any registered task without its file, and a task registered
again takes effect at its next run without restarting anything.

`granary register`, `granary serve` (for the files under `deployments/`), `granary deploy` and the HTTP API all
register through `Registry.register`: a definition is checked completely first, and nothing already registered
changes when it is refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from granary_flows.blocks import TASK_BLOCK_TYPE, Entry, GranaryTask
from granary_flows.definition import TaskDefinition
from granary_flows.deployment import create_deployment
from granary_flows.errors import DefinitionError, UnknownTask
from granary_flows.loading import Definition, LoadedDefinition, check_pipeline, registry_key
from granary_flows.pipeline import PipelineDefinition


class Registry:
    """Tasks and pipelines registered on one Prefect server.

    Args:
        client: a synchronous Prefect client of that server.

    Example:
        >>> with get_client(sync_client=True) as client:  # doctest: +SKIP
        ...     Registry(client).register(read_file(Path("deployments/ndvi.yaml")))
    """

    def __init__(self, client: SyncPrefectClient):
        self.client = client

    def register(
        self,
        loaded: LoadedDefinition,
        work_pool: str | None = None,
        pull_steps: list[dict[str, Any]] | None = None,
        registered_by: str | None = None,
        image_digest: str | None = None,
        also: dict[str, TaskDefinition] | None = None,
    ) -> Entry:
        """Register (or replace) a task or pipeline: its deployment and its stored definition.

        Args:
            loaded: a checked definition (`loading.read_definition` / `read_file`).
            work_pool: the work pool whose workers run it; None for `granary serve`.
            pull_steps: what Prefect's own runner does before loading the flow (`serve --subprocess`).
            registered_by: who registered it (the HTTP API's identity).
            image_digest: the image digest to pin, when the operator pins images.
            also: tasks being registered together with it, which a pipeline may use.

        Raises:
            DefinitionError: a pipeline whose steps cannot run with the registered tasks; nothing changed.
        """
        definition = loaded.definition
        if isinstance(definition, TaskDefinition) and definition.runtime.docker:
            definition = _with_image_policy(definition, loaded.source)
            image_digest = definition.runtime.docker.digest if definition.runtime.docker else image_digest
        if isinstance(definition, PipelineDefinition):
            tasks = self.tasks() | (also or {})
            problem = check_pipeline(loaded, tasks)
            if problem is not None:
                raise problem
        self._refuse_collision(definition.name)
        entry = Entry(
            name=definition.name,
            kind="pipeline" if isinstance(definition, PipelineDefinition) else "task",
            version=definition.version,
            title=definition.title,
            runtime=definition.runtime_kind.value,
            source_format=loaded.source_format.value,
            source=loaded.source,
            work_pool=work_pool,
            definition=definition.model_dump(mode="json", by_alias=True, exclude_none=True),
            document=loaded.document,
            registered=datetime.now(timezone.utc),
            registered_by=registered_by,
            image_digest=image_digest,
        )
        entry.deployment_id = create_deployment(
            self.client, definition, work_pool=work_pool, pull_steps=pull_steps, version=entry.deployment_version
        )
        GranaryTask(**entry.model_dump(mode="json")).save(registry_key(definition.name), overwrite=True)
        return entry

    def _refuse_collision(self, name: str) -> None:
        """Two names that would share a block (`Log_hello` and `log-hello`) cannot both be registered."""
        existing = self.get(name)
        if existing is not None and existing.name != name:
            raise DefinitionError(
                name, [f"name: {name!r} and the registered task {existing.name!r} cannot both be registered"]
            )

    def get(self, name: str) -> Entry | None:
        """The registered entry called `name`, or None."""
        try:
            document = self.client.read_block_document_by_name(name=registry_key(name), block_type_slug=TASK_BLOCK_TYPE)
        except ObjectNotFound:
            return None
        return _entry(document.data)

    def entries(self) -> list[Entry]:
        """Every registered task and pipeline, by name."""
        try:
            documents = self.client.read_block_documents_by_type(block_type_slug=TASK_BLOCK_TYPE, limit=None)
        except ObjectNotFound:
            return []
        except PrefectHTTPStatusError as err:  # the sync client's answer when nothing was ever registered
            if err.response.status_code == 404:
                return []
            raise
        return sorted((_entry(document.data) for document in documents), key=lambda entry: entry.name)

    def tasks(self) -> dict[str, TaskDefinition]:
        """Every registered task (not pipelines), by name."""
        found = {}
        for entry in self.entries():
            if entry.kind == "task":
                found[entry.name] = TaskDefinition.model_validate(entry.definition | {"source": entry.source})
        return found

    def definition(self, name: str) -> Definition:
        """The registered definition called `name`; a pipeline comes with its steps' registered tasks.

        Raises:
            UnknownTask: when nothing of that name is registered, or a pipeline's task is not.
        """
        entry = self.get(name)
        if entry is None:
            known = ", ".join(entry.name for entry in self.entries()) or "none"
            raise UnknownTask(f"no task named {name!r} is registered on this Prefect server (registered: {known})")
        return self.linked(entry.model())

    def linked(self, definition: Definition) -> Definition:
        """A pipeline with its steps' tasks attached, as registered now."""
        if isinstance(definition, PipelineDefinition):
            tasks = {}
            for step in definition.steps:
                entry = self.get(step.task)
                if entry is None or entry.kind != "task":
                    raise UnknownTask(f"pipeline {definition.name!r}: its task {step.task!r} is not registered")
                tasks[step.task] = entry.model()
            definition.link(tasks)  # type: ignore[arg-type]
        return definition

    def remove(self, name: str) -> Entry:
        """Remove a task's deployment and stored definition; the history of its runs stays.

        Raises:
            UnknownTask: when nothing of that name is registered.
        """
        entry = self.get(name)
        if entry is None:
            raise UnknownTask(f"no task named {name!r} is registered on this Prefect server")
        try:
            deployment = self.client.read_deployment_by_name(f"{entry.name}/{entry.name}")
            self.client.delete_deployment(deployment.id)
        except ObjectNotFound:
            pass
        document = self.client.read_block_document_by_name(name=registry_key(name), block_type_slug=TASK_BLOCK_TYPE)
        self.client.delete_block_document(document.id)
        return entry


def _with_image_policy(definition: TaskDefinition, source: str) -> TaskDefinition:
    """The operator's image policy at registration: only images from allowed prefixes; with pinning, the image's
    id is recorded, and a run of anything else is refused.

    Raises:
        DefinitionError: naming the image and the rule.
    """
    from granary_flows.policy import current_policy

    policy = current_policy()
    spec = definition.runtime.docker
    assert spec is not None
    if policy.allow_images is not None and not any(spec.image.startswith(prefix) for prefix in policy.allow_images):
        allowed = ", ".join(policy.allow_images) or "none"
        raise DefinitionError(
            source, [f"runtime.docker.image: {spec.image!r} is not from a registry or prefix the operator allows "
                     f"(GRANARY_ALLOW_IMAGES: {allowed})"]
        )  # fmt: skip
    if policy.require_images:
        problem = missing_image(definition)
        if problem:
            raise DefinitionError(source, [f"runtime.docker.image: {problem} (GRANARY_REQUIRE_IMAGES)"])
    if not policy.pin_images:
        return definition
    from granary_flows.errors import RuntimeUnavailable
    from granary_flows.runtimes.docker import DockerRuntime

    try:
        digest = DockerRuntime().image_digest(spec.model_copy(update={"digest": None}))
    except RuntimeUnavailable as err:
        raise DefinitionError(source, [f"runtime.docker.image: cannot be pinned: {err}"]) from err
    docker = spec.model_copy(update={"digest": digest})
    return definition.model_copy(update={"runtime": definition.runtime.model_copy(update={"docker": docker})})


def missing_image(definition: Any) -> str | None:
    """What keeps a Docker task's image from running on this host's engine (it is not there, or there is no engine),
    or None; None too for a task that is not a Docker task. A registration says it, so that nobody learns it from
    every execution failing."""
    from granary_flows.errors import RuntimeUnavailable
    from granary_flows.runtimes.docker import DockerRuntime

    spec = definition.runtime.docker if isinstance(definition, TaskDefinition) else None
    if spec is None:
        return None
    try:
        DockerRuntime().image_digest(spec.model_copy(update={"digest": None}))
    except RuntimeUnavailable as err:
        return str(err)
    return None


def _entry(data: dict[str, Any]) -> Entry:
    return Entry.model_validate(data)
