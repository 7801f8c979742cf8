"""lintorch.bench.gpu_check: without a GPU, one line; each failed step named."""
from tests import helpers


def test_the_gpu_check_says_no_gpu_in_one_line_and_names_each_failure(emulated, monkeypatch, tmp_path, capsys):
    """python -m lintorch.bench.gpu_check, the check to run on a GPU machine: without one, one line and exit 2;
    on one (emulated here, its two commands stubbed: a pass and a time-out), every failure named."""
    from lintorch.bench import gpu_check
    assert gpu_check.main(["--out", str(tmp_path / "none")]) == 2
    helpers.one_error_line(capsys.readouterr().err)
    outcomes = iter([(0, 1.0), ("timeout", 2.0)])
    monkeypatch.setattr(gpu_check, "_run", lambda name, argv, limit: next(outcomes))
    with emulated():
        assert gpu_check.main(["--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "card: emulated cuda" in out and "doctor   passed" in out and "bench    FAILED (timeout)" in out
