"""The `lintorch` console script: one subcommand per command module, each with that command's parser."""
import pytest

import lintorch.__main__ as commands
from lintorch import cli


@pytest.fixture(autouse=True)
def _prog(monkeypatch):
    monkeypatch.setattr(cli, "PROG", None)


def test_lists_every_command(capsys):
    assert commands.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "predict", "extract", "gradcheck", "doctor", "bench"):
        assert f"  {name} " in out
    assert commands.main([]) == 2


def test_an_unknown_command_is_one_line_and_exit_2(capsys):
    assert commands.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lintorch: error: no command 'trian'") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", list(commands.COMMANDS))
def test_each_subcommand_is_that_commands_parser(name, capsys):
    with pytest.raises(SystemExit) as e:
        commands.main([name, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lintorch {name} ")


def test_a_usage_error_names_the_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        commands.main(["train", "--lr", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lintorch train: error: argument --lr") and len(err.strip().splitlines()) == 1
