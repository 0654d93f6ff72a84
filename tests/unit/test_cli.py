"""The command line: every stage is a subcommand, and each shows its own options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bestie import cli


def test_help_lists_every_stage_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert all(f"    {command}" in listed for command in cli.COMMANDS)


@pytest.mark.parametrize("command", ["train-instance", "show"])
def test_a_commands_help_shows_its_own_options(capsys, command: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: python -m bestie {command}")
    assert {"train-instance": "--pseudo", "show": "--image"}[command] in usage


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `python -m bestie schema | head -1`: here the reader closes the pipe before the first
    # write, so every write fails; the command stops with status 1 and no traceback.
    process = subprocess.Popen(
        [sys.executable, "-m", "bestie", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait() == 1, error
    assert "Traceback" not in error and "BrokenPipeError" not in error, error
