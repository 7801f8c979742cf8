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


def test_a_dataloader_workers_error_is_its_own_message():
    text = ("Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise DataError("a: b")\nlintorch.errors.DataError: cannot read image '
            "a.png: input/output error\n")
    assert cli.one_line(RuntimeError(text)) == "cannot read image a.png: input/output error"
    assert cli.one_line(ValueError("Caught nothing: as it is")) == "Caught nothing: as it is"


def test_doctor_out_is_checked_before_any_work(tmp_path, capsys):
    from lintorch import doctor
    for out, says in ((tmp_path / "missing" / "r.json", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(SystemExit) as e:
            doctor.main(["--device", "cpu", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and says in err[0] and "--out" in err[0], err
