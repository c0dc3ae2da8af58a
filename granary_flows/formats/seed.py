"""Seed job manifests (NGA's Scale): read, checked and turned into task definitions, and their command expanded.

The manifest's models (`seed_manifest`) follow the Seed 1.0 schema field for field, so a manifest that breaks the
schema is refused naming the field. Seed's `interface` is kept on the task, since it shapes execution: the command
template, input names, mounts, settings and JSON outputs.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, cast

import yaml
from pydantic import ValidationError

from granary_flows.contract import INPUT_DIR, RESERVED_VARIABLES, variable_name
from granary_flows.errors import DefinitionError
from granary_flows.form import title_of
from granary_flows.locations import at, describe
from granary_flows.seed_manifest import JsonValue, SeedInterface, SeedManifest

MANIFEST_LABEL = "com.ngageoint.seed.manifest"
OUTPUTS_FILE = "seed.outputs.json"


def is_manifest(document: dict[str, Any]) -> bool:
    return "seedVersion" in document and "job" in document


def is_seed_deployment(document: dict[str, Any]) -> bool:
    """A task file that deploys a Seed manifest: `seed: {manifest, image, mounts, settings, secrets}`."""
    return set(document) == {"seed"} and isinstance(document["seed"], dict) and "manifest" in document["seed"]


def parse_manifest(
    document: dict[str, Any], source: str, root: yaml.Node | None = None, within: tuple[Any, ...] = ()
) -> SeedManifest:
    """Check a manifest against the Seed 1.0 schema.

    Args:
        document: the manifest.
        source: the file (or image) it came from, for the error.
        root, within: the file's YAML node tree and where the manifest sits in it, for line numbers.

    Raises:
        DefinitionError: naming each field at fault (as `job.interface.inputs.files.0.name (line 12): ...`).
    """
    try:
        manifest = SeedManifest.model_validate(document)
    except ValidationError as err:
        raise DefinitionError(source, describe(err, root, within)) from err
    problems = [at(location, message, root, within) for location, message in _name_problems(manifest)]
    if problems:
        raise DefinitionError(source, problems)
    return manifest


def task_document(manifest: SeedManifest, deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our task definition (as data) for a Seed manifest.

    Args:
        manifest: the checked manifest.
        deployment: what only the deployment can say: `image`, `mounts` (name -> host path), `settings`
            (name -> value), `secrets` (secret setting -> Prefect Secret block name), and `name` to deploy the
            same job under another task name.
    """
    deployment = deployment or {}
    job, interface = manifest.job, manifest.job.interface
    properties: dict[str, Any] = {}
    required = []
    for file in interface.inputs.files:
        uri = {"type": "string", "format": "uri"}
        spec = {"type": "array", "items": uri, "minItems": 1} if file.multiple else dict(uri)
        description = "A file (file://, s3:// or https://)" + (", several" if file.multiple else "")
        if file.mediaTypes:
            description += f"; {', '.join(file.mediaTypes)}"
        properties[parameter_name(file.name)] = spec | {"title": title_of(file.name), "description": description}
        if file.required:
            required.append(parameter_name(file.name))
    for value in interface.inputs.json_:
        properties[parameter_name(value.name)] = {"type": value.type, "title": title_of(value.name)}
        if value.required:
            required.append(parameter_name(value.name))
    scalars = {scalar.name: scalar.value for scalar in job.resources.scalar}
    return {
        "name": deployment.get("name") or job.name.lower(),
        "title": job.title,
        "description": job.description,
        "version": job.jobVersion,
        "tags": job.tags,
        "timeout": job.timeout,
        "validator": {"schema": {"type": "object", "required": required, "properties": properties}},
        "runtime": {"docker": {"image": deployment.get("image") or manifest.image}},
        "resources": {
            "cpus": scalars.get("cpus", 1),
            "memory": int(scalars.get("mem", 512)),
            "gpus": int(scalars.get("gpus", 0)),
            "sharedMemory": int(scalars["sharedMem"]) if "sharedMem" in scalars else None,
        },
        "errors": {
            e.code: {"name": e.name, "title": e.title, "description": e.description, "category": e.category}
            for e in job.errors
        },
        "outputs": {
            "files": [
                {
                    "name": f.name,
                    "pattern": f.pattern,
                    "required": f.required,
                    "multiple": f.multiple,
                    "mediaType": f.mediaType,
                }
                for f in interface.outputs.files
            ]
        },
        "seed": SeedInterface(
            command=interface.command,
            files=interface.inputs.files,
            values=interface.inputs.json_,
            outputs_json=interface.outputs.json_,
            mounts=interface.mounts,
            settings=interface.settings,
            allocated=scalars,
            input_multipliers={s.name: s.inputMultiplier for s in job.resources.scalar if s.inputMultiplier},
            mount_sources=_given(deployment.get("mounts")),
            setting_values=_given(deployment.get("settings")),
            secret_blocks=_given(deployment.get("secrets")),
        ).model_dump(by_alias=True),
    }


def parameter_name(seed_name: str) -> str:
    """Seed names may hold `-`; flow parameters may not. The variable name is the same either way."""
    return seed_name.replace("-", "_")


def expand_command(template: str, variables: dict[str, str]) -> list[str]:
    """Seed's command: `${NAME}` and `$NAME` replaced, `${NAME/#/-d }` prefixing a value that is set, then split.

    Example:
        >>> expand_command("${IN} ${FLAG/#/-f } ${OUTPUT_DIR}", {"IN": "/in/a b.png", "FLAG": "x", "OUTPUT_DIR": "/o"})
        ['/in/a b.png', '-f', 'x', '/o']
    """

    def replace(match: re.Match[str]) -> str:
        value = variables.get(match.group("braced") or match.group("bare"), "")
        if not value:
            return ""
        # As a shell would: the prefix splits into words, the value stays one word.
        return f"{match.group('prefix') or ''}{shlex.quote(value)}"

    pattern = r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:/#/(?P<prefix>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    return shlex.split(re.sub(pattern, replace, template))


def outputs_from(document: Any, declared: list[JsonValue]) -> dict[str, Any]:
    """The JSON outputs named in the manifest, read from `seed.outputs.json` (by `key` when one is given).

    Raises:
        ValueError: naming a required output that is missing.
    """
    values = {}
    for output in declared:
        key = output.key or output.name
        if isinstance(document, dict) and key in document:
            values[output.name] = document[key]
        elif output.required:
            raise ValueError(f"required JSON output {output.name!r} (key {key!r}) is not in {OUTPUTS_FILE}")
    return values


def variables(
    interface: SeedInterface, arguments: dict[str, Any], secrets: dict[str, str], input_mib: float = 0.0
) -> dict[str, str]:
    """Seed's variables beyond the arguments: a folder for `multiple` inputs, `ALLOCATED_<RESOURCE>`, settings.

    `ALLOCATED_<RESOURCE>` is the manifest's value plus its `inputMultiplier` times the inputs' size in MiB.
    """
    found = {}
    for file in interface.files:
        if file.multiple and parameter_name(file.name) in arguments:
            found[variable_name(file.name)] = f"{INPUT_DIR}/{parameter_name(file.name)}"
    for resource, amount in interface.allocated.items():
        grown = amount + interface.input_multipliers.get(resource, 0.0) * input_mib
        found[f"ALLOCATED_{resource.upper()}"] = f"{grown:g}"
    for setting in interface.settings:
        value = secrets.get(setting.name) if setting.secret else interface.setting_values.get(setting.name)
        if value is not None:
            found[variable_name(setting.name)] = value
    return found


def resolve_secrets(interface: SeedInterface) -> dict[str, str]:
    """The values of secret settings, each from the Prefect `Secret` block the deployment names for it.

    Raises:
        DefinitionError: when a named block does not exist.
    """
    from prefect.blocks.system import Secret

    values = {}
    for setting in interface.settings:
        block = interface.secret_blocks.get(setting.name)
        if setting.secret and block:
            try:
                secret = cast(Secret, Secret.load(block))  # a Secret, not a coroutine, from sync code
                values[setting.name] = str(secret.get())
            except ValueError as err:
                raise DefinitionError(
                    block, [f"secret setting {setting.name}: no Secret block named {block!r}"]
                ) from err
    return values


def mount_volumes(interface: SeedInterface) -> dict[str, dict[str, str]]:
    """Docker volumes for the mounts the deployment gives a host path for."""
    return {
        interface.mount_sources[mount.name]: {"bind": mount.path, "mode": mount.mode}
        for mount in interface.mounts
        if mount.name in interface.mount_sources
    }


def deployment_document(manifest: dict[str, Any], image: str) -> dict[str, Any]:
    """The task file `granary import-seed` writes: the manifest, the image, and what the deployment must fill in."""
    interface = manifest["job"].get("interface", {})
    return {
        "seed": {
            "image": image,
            "mounts": {mount["name"]: None for mount in interface.get("mounts", [])},
            "settings": {s["name"]: None for s in interface.get("settings", []) if not s.get("secret")},
            "secrets": {s["name"]: None for s in interface.get("settings", []) if s.get("secret")},
            "manifest": manifest,
        }
    }


def manifest_from_label(labels: dict[str, str], image: str) -> dict[str, Any]:
    try:
        return json.loads(labels[MANIFEST_LABEL])
    except KeyError as err:
        raise DefinitionError(image, [f"the image has no {MANIFEST_LABEL} label"]) from err
    except ValueError as err:
        raise DefinitionError(image, [f"label {MANIFEST_LABEL} is not JSON: {err}"]) from err


def _name_problems(manifest: SeedManifest) -> list[tuple[tuple[Any, ...], str]]:
    """Names whose variables collide with a reserved one or with each other, as (location, message)."""
    interface = manifest.job.interface
    named: list[tuple[tuple[Any, ...], str]] = [
        (("job", "interface", "inputs", "files", i, "name"), f.name) for i, f in enumerate(interface.inputs.files)
    ]
    named += [(("job", "interface", "inputs", "json", i, "name"), v.name) for i, v in enumerate(interface.inputs.json_)]
    named += [(("job", "interface", "settings", i, "name"), s.name) for i, s in enumerate(interface.settings)]
    named += [(("job", "interface", "mounts", i, "name"), m.name) for i, m in enumerate(interface.mounts)]
    problems: list[tuple[tuple[Any, ...], str]] = []
    seen: dict[str, str] = {}
    for location, name in named:
        variable = variable_name(name)
        if RESERVED_VARIABLES.match(variable):
            problems.append((location, f"{name!r} collides with the reserved variable {variable}"))
        elif variable in seen:
            problems.append((location, f"{name!r} and {seen[variable]!r} are both the variable {variable}"))
        seen.setdefault(variable, name)
    return problems


def _given(mapping: dict[str, Any] | None) -> dict[str, str]:
    """The entries a deployment filled in; `import-seed` writes the others as empty placeholders."""
    return {key: str(value) for key, value in (mapping or {}).items() if value not in (None, "")}
