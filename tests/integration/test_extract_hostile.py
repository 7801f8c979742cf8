"""python -m lintorch.extract's --out under hostile use, in this process (issue 20, class F): --out
is claimed before any work and built beside, then renamed into place, so a failure, a full disk or
Ctrl-C leaves --out as it was (no husk, no temporary file) and says which file failed; --overwrite
replaces a feature folder whole; two extracts never share one --out. Signals from outside:
tests/cli/test_extract_signals_cli.py."""
import errno
import os

import pytest

from lintorch import extract
from lintorch.features import store
from lintorch.output.rundir import build_beside


@pytest.fixture
def argv(image_folder, tmp_path):
    return ["--dataset", "imagefolder", "--data-dir", str(image_folder), "--cache-dir", str(tmp_path / "cache"),
            "--device", "cpu", "--quiet", "--threads", "1"]


def beside(out):
    """What lies beside --out other than --out itself and the image cache."""
    return sorted(n for n in os.listdir(out.parent) if n not in (out.name, "cache"))


def fail_writing_test(monkeypatch, error):
    """The test split's file raises `error` on its first write (a full disk, a signal mid-write)."""
    real = store.SplitWriter.__init__

    class Failing:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise error

        def close(self):
            self.f.close()

    def init(self, folder, split, *a, **k):
        real(self, folder, split, *a, **k)
        if split == "test":
            self.f = Failing(self.f)
    monkeypatch.setattr(store.SplitWriter, "__init__", init)


@pytest.mark.parametrize("error, code", [(OSError(errno.ENOSPC, "No space left on device"), 2),
                                         (KeyboardInterrupt(), 130), (SystemExit(143), 143)])
def test_f_a_failed_or_interrupted_extract_leaves_nothing(argv, tmp_path, monkeypatch, capsys, error, code):
    out = tmp_path / "out"
    fail_writing_test(monkeypatch, error)
    try:
        got = extract.main(["--features", "colorhist", "--out", str(out), *argv])
    except SystemExit as e:
        got = e.code
    monkeypatch.undo()
    assert got == code
    assert not out.exists() and beside(out) == []
    if code == 2:
        err = capsys.readouterr().err
        assert "test.npy" in err and "no space left" in err and len(err.strip().splitlines()) == 1, err


def test_f_overwrite_replaces_the_folder_whole(argv, tmp_path):
    out = tmp_path / "out"
    assert extract.main(["--features", "hog", "--out", str(out), *argv]) == 0
    assert extract.main(["--features", "colorhist", "--format", "pt", "--overwrite", "--out", str(out), *argv]) == 0
    assert sorted(os.listdir(out)) == ["classes.json", "extractor.json", "extractor.pt", "test.pt", "train.pt"]
    train, test = store.open_folder(str(out))
    assert train.d == 10 and beside(out) == []


def test_f_out_is_refused_before_any_work_when_taken(argv, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):                     # not a feature folder: never replaced
        assert extract.main(["--features", "hog", "--out", str(out), *extra, *argv]) == 2
        assert "notes.txt" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"] and beside(out) == []
    (out / "notes.txt").unlink()
    assert extract.main(["--features", "hog", "--out", str(out), *argv]) == 0     # an empty folder is taken


def test_f_a_second_extract_into_a_claimed_out_is_refused(argv, tmp_path, capsys):
    out = tmp_path / "out"
    with build_beside(str(out)):                            # another process holds --out: the lock is per file
        assert _in_child(["--features", "hog", "--out", str(out), *argv]) == 2
        assert not out.exists()


def _in_child(args):
    """extract.main(args) in a forked child (flock is per open file, so this process would get it) -> exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = extract.main(args)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_f_a_killed_extracts_build_folder_is_removed(argv, tmp_path):
    import subprocess
    import sys
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, timeout=60).stdout)
    out = tmp_path / "out"
    husk = tmp_path / f".out.partial{dead}"
    husk.mkdir()
    (husk / "train.npy.tmp1").write_bytes(b"\0" * 1000)
    assert extract.main(["--features", "hog", "--out", str(out), *argv]) == 0
    assert beside(out) == []


@pytest.mark.parametrize("fmt", ["npy", "pt"])
def test_a_feature_folder_changed_after_extract_is_refused(argv, tmp_path, train_main, capsys, fmt):
    """extract writes each split's checksum into extractor.json; a file of the right shape and dtype but
    other values (a row zeroed) is refused on reading, by name, before anything trains on it."""
    import json

    import numpy as np
    import torch
    out = tmp_path / "feats"
    assert extract.main(["--features", "hog", "--format", fmt, "--out", str(out), *argv]) == 0
    sums = json.loads((out / "extractor.json").read_text())["checksums"]
    assert set(sums) == {"train", "test"} and all(v.startswith("crc32:") for v in sums.values())
    store.open_folder(str(out))                                    # as written: served
    if fmt == "npy":
        x = np.load(out / "test.npy", mmap_mode="r+")
        x[3] = 0
        x.flush()
        del x
    else:
        d = torch.load(out / "test.pt", weights_only=True)
        d["x"][3] = 0
        torch.save(d, out / "test.pt")
    with pytest.raises(store.FeatureError, match=r"test\.%s: its values do not match the checksum" % fmt):
        store.open_folder(str(out))
    capsys.readouterr()
    assert train_main("--dataset", "features", "--data-dir", str(out), "--epochs", "1", "--logdir",
                      str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checksum" in err
    info = json.loads((out / "extractor.json").read_text())   # a folder without checksums (made by hand) is served
    del info["checksums"]
    (out / "extractor.json").write_text(json.dumps(info))
    assert store.open_folder(str(out))[1].n == 15
