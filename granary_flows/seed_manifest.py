"""The Seed 1.0 job manifest (`seed.manifest.json`), field for field as its JSON Schema has it (names, patterns, enums,
defaults), and `SeedInterface`: what a task registered from a manifest keeps of it for execution.

How a manifest becomes a task, and Seed's execution semantics, are in `formats.seed`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SEMVER = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
)
NAME = r"^[a-zA-Z0-9_-]+$"
JsonType = Literal["array", "boolean", "integer", "number", "object", "string"]


class _Seed(BaseModel):
    model_config = ConfigDict(extra="allow")  # Seed lets vendors add fields; keep them


class Maintainer(_Seed):
    name: str
    email: str


class SeedInputFile(_Seed):
    name: str = Field(pattern=NAME)
    required: bool = True
    multiple: bool = False
    partial: bool = False
    mediaTypes: list[str] = Field(default_factory=list)


class JsonValue(_Seed):
    name: str = Field(pattern=NAME)
    type: JsonType
    required: bool = True
    key: str | None = None


class SeedInputs(_Seed):
    files: list[SeedInputFile] = Field(default_factory=list)
    json_: list[JsonValue] = Field(default_factory=list, alias="json")


class SeedOutputFile(_Seed):
    name: str = Field(pattern=NAME)
    pattern: str
    mediaType: str | None = None
    multiple: bool = False
    required: bool = True


class SeedOutputs(_Seed):
    files: list[SeedOutputFile] = Field(default_factory=list)
    json_: list[JsonValue] = Field(default_factory=list, alias="json")


class Mount(_Seed):
    name: str = Field(pattern=NAME)
    path: str
    mode: Literal["ro", "rw"] = "ro"


class Setting(_Seed):
    name: str = Field(pattern=NAME)
    secret: bool = False


class Interface(_Seed):
    command: str | None = None
    inputs: SeedInputs = Field(default_factory=SeedInputs)
    outputs: SeedOutputs = Field(default_factory=SeedOutputs)
    mounts: list[Mount] = Field(default_factory=list)
    settings: list[Setting] = Field(default_factory=list)


class Scalar(_Seed):
    name: str = Field(pattern=NAME)
    value: float
    inputMultiplier: float | None = None


class SeedResources(_Seed):
    scalar: list[Scalar] = Field(default_factory=list)


class SeedError(_Seed):
    code: int
    name: str = Field(pattern=NAME)
    title: str | None = None
    description: str | None = None
    category: Literal["job", "data"] = "job"


class Job(_Seed):
    name: str = Field(pattern=r"^[a-zA-Z0-9-]+$")
    jobVersion: str = Field(pattern=SEMVER)
    packageVersion: str = Field(pattern=SEMVER)
    title: str
    description: str
    tags: list[str] = Field(default_factory=list)
    maintainer: Maintainer
    timeout: int
    interface: Interface = Field(default_factory=Interface)
    resources: SeedResources = Field(default_factory=SeedResources)
    errors: list[SeedError] = Field(default_factory=list)


class SeedManifest(_Seed):
    """A Seed 1.0 job manifest (`seed.manifest.json`)."""

    seedVersion: str = Field(pattern=r"^1\.0\.0$")
    job: Job

    @property
    def image(self) -> str:
        """Seed's image name convention: `<name>-<jobVersion>-seed:<packageVersion>`."""
        return f"{self.job.name.lower()}-{self.job.jobVersion}-seed:{self.job.packageVersion}"


class SeedInterface(BaseModel):
    """What a Seed task needs at execution time, kept on its definition."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    command: str | None = None
    files: list[SeedInputFile] = Field(default_factory=list)
    values: list[JsonValue] = Field(default_factory=list)
    outputs_json: list[JsonValue] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)
    settings: list[Setting] = Field(default_factory=list)
    allocated: dict[str, float] = Field(default_factory=dict)
    input_multipliers: dict[str, float] = Field(default_factory=dict, description="resource -> MiB per input MiB")
    mount_sources: dict[str, str] = Field(default_factory=dict, description="mount name -> host path")
    setting_values: dict[str, str] = Field(default_factory=dict, description="setting name -> value")
    secret_blocks: dict[str, str] = Field(default_factory=dict, description="secret setting -> Secret block name")
