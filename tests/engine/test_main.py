"""``python -m unetrt COMMAND``: every console script by name, with its own flags and exit codes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from unetrt import __version__
from unetrt.__main__ import COMMANDS, main


def test_every_console_script_has_its_command() -> None:
    scripts = [script.name for script in entry_points(group="console_scripts")
               if script.value.startswith("unetrt.commands:")]
    assert len(scripts) == 8
    assert {name.removeprefix("unet-") for name in scripts} | {"doctor"} == set(COMMANDS)


@pytest.mark.parametrize("spelling", ["stream", "unet-stream"])
def test_a_command_runs_with_its_flags_and_restores_argv(spelling: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = list(sys.argv)
    with pytest.raises(SystemExit) as exit_info:
        main([spelling, "--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"unet-stream (unetrt {__version__})"
    assert sys.argv == argv


def test_a_bad_flag_is_the_commands_own_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["stream", "sample", "--no-such-flag"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("unet-stream: error: unrecognized arguments: --no-such-flag "
                                       "(see unet-stream --help)\n")


def test_no_command_lists_them_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m unetrt COMMAND")
    assert all(f"  {name} " in err for name in COMMANDS)


def test_an_unknown_command_is_one_line_naming_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strem", "sample"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'strem' is not a unetrt command; choose from stream, eval," in err


def test_help_and_version_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "commands:" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"unetrt {__version__}"


def test_the_module_runs_as_a_program() -> None:
    proc = subprocess.run([sys.executable, "-m", "unetrt", "doctor", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m unetrt.doctor")


def test_each_command_runs_its_own_console_scripts_entry_point() -> None:
    # A name bound to another command's entry point (eval running bench) ran with the right program name in its
    # usage line, so only the entry point itself tells them apart.
    scripts = {script.name.removeprefix("unet-"): script for script in entry_points(group="console_scripts")
               if script.value.startswith("unetrt.commands:")}
    assert all(COMMANDS[name][0] is script.load() for name, script in scripts.items())


def test_the_command_sees_only_its_own_arguments_under_its_scripts_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command's name left in its arguments is taken for its first input ('stream' a file to open).
    seen: list[list[str]] = []

    def stream() -> int:
        seen.append(list(sys.argv))
        return 0

    monkeypatch.setitem(COMMANDS, "stream", (stream, "segment"))
    assert main(["unet-stream", "sample", "--fps", "5"]) == 0
    assert seen == [["unet-stream", "sample", "--fps", "5"]]


def test_short_help_lists_the_commands_as_long_help_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    assert "commands:" in capsys.readouterr().out
