"""What the README and the documentation site tell a user to type works: every command and flag exists, the task
name pattern is the enforced one, and the README's ten-line task registers and runs."""

from __future__ import annotations

import re

import pytest
from helpers import ROOT
from typer.testing import CliRunner

from granary_flows.cli import app

cli = CliRunner()
README = (ROOT / "README.md").read_text()
COMMANDS = (ROOT / "docs" / "commands.md").read_text()


def shown_commands() -> list[str]:
    """Every `granary ...` the README's shell blocks and the commands page's table show."""
    shell = [
        line.split("#")[0].strip()
        for block in re.findall(r"```(?:sh|console)\n(.*?)```", README, re.S)
        for line in block.splitlines()
        if line.strip().startswith("granary ")
    ]
    table = [
        found for row in re.findall(r"^\| (.*?) \|", COMMANDS, re.M) for found in re.findall(r"`(granary [^`]*)`", row)
    ]
    return shell + table


@pytest.mark.unit
@pytest.mark.parametrize("command", shown_commands())
def test_every_documented_command_and_flag_exists(command):
    words = command.split()
    path = []
    for word in words[1:]:
        optional = re.fullmatch(r"\[([a-z]+)\]", word)  # `granary tasks [list]`: the subcommand may be said
        if optional:
            said = cli.invoke(app, [*path, optional.group(1), "--help"], terminal_width=200)
            assert said.exit_code == 0, (command, said.output)
            break
        if word.startswith(("-", "[")) or word.isupper() or "=" in word or "/" in word or "." in word:
            break
        path.append(word)
    helped = cli.invoke(app, [*path, "--help"], terminal_width=200)
    assert helped.exit_code == 0, (command, helped.output)
    for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", command):
        assert flag in helped.output, f"{command}: {flag} is not an option of granary {' '.join(path)}"


@pytest.mark.unit
def test_the_documented_task_name_pattern_is_the_enforced_one():
    from granary_flows.definition import TASK_NAME

    tasks_page = (ROOT / "docs" / "tasks.md").read_text()
    documented = re.search(r"name: ndvi +# (\S+) :", tasks_page).group(1)
    assert documented == TASK_NAME.pattern


def test_the_readmes_ten_line_task_registers_and_runs_as_it_says(client, docker_runtime, tmp_path):
    from helpers import runner_for

    from granary_flows.definition import RuntimeKind
    from granary_flows.registry import Registry
    from granary_flows.store import ResultsStore

    task = re.search(r"`deployments/greet.yaml`:\n\n```yaml\n(.*?)```", README, re.S).group(1)
    assert len(task.strip().splitlines()) <= 11  # the ten lines the README promises, and its name line
    path = tmp_path / "greet.yaml"
    path.write_text(task)
    assert cli.invoke(app, ["check", str(path)]).exit_code == 0
    registered = cli.invoke(app, ["register", str(path)])
    assert registered.exit_code == 0, registered.output
    entry = Registry(client).get("greet")
    served = {entry.deployment_id: Registry(client).definition("greet")}
    with runner_for(served, ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}):
        ran = cli.invoke(app, ["run", "greet", "-p", "name=Ada", "--watch"], terminal_width=250)
    assert ran.exit_code == 0, ran.output
    assert "greeting.txt" in ran.output
    execution = re.search(r"execution (\S+) of greet created", ran.output).group(1)
    assert ResultsStore().read_bytes(f"{ResultsStore().execution_uri('greet', execution)}/greeting.txt") == (
        b"Hello, Ada!\n"
    )
