"""lintorch.extract in this process: --out claimed whole or not at all, flags refused before any work, threads,
CUDA."""
import errno
import json
import os

import pytest
import torch

from lintorch import extract
from lintorch.features import from_state_dict, make_extractor, store
from lintorch.output.rundir import build_beside
from tests import helpers
from tests.conftest import nan_transform


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
def test_a_failed_or_interrupted_extract_leaves_nothing(argv, tmp_path, monkeypatch, capsys, error, code):
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


def test_overwrite_replaces_the_folder_whole(argv, tmp_path):
    out = tmp_path / "out"
    assert extract.main(["--features", "hog", "--out", str(out), *argv]) == 0
    assert extract.main(["--features", "colorhist", "--format", "pt", "--overwrite", "--out", str(out), *argv]) == 0
    assert sorted(os.listdir(out)) == ["classes.json", "extractor.json", "extractor.pt", "test.pt", "train.pt"]
    train, test = store.open_folder(str(out))
    assert train.d == 10 and beside(out) == []


def test_out_is_refused_before_any_work_when_taken(argv, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):                     # not a feature folder: never replaced
        assert extract.main(["--features", "hog", "--out", str(out), *extra, *argv]) == 2
        assert "notes.txt" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"] and beside(out) == []
    (out / "notes.txt").unlink()
    assert extract.main(["--features", "hog", "--out", str(out), *argv]) == 0     # an empty folder is taken


def test_a_second_extract_into_a_claimed_out_is_refused(argv, tmp_path, capsys):
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


def test_a_killed_extracts_build_folder_is_removed(argv, tmp_path):
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


def test_extract_flags_that_would_be_ignored_are_usage_errors(capsys):
    from lintorch.extract import parse_args
    with pytest.raises(SystemExit) as e:
        parse_args(["--features", "hog", "--centroids", "9", "--out", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--centroids configures --features kmeans" in err
    assert parse_args(["--features", "hog,kmeans", "--centroids", "9", "--out", "x"]).centroids == 9


@pytest.mark.parametrize("argv, words", [
    (["--features", "hog", "--image-size", "4"], ["hog", "--image-size is 4"]),
    (["--features", "kmeans", "--centroids", "50", "--patches", "10"], ["--patches 10", "--centroids 50"]),
    (["--features", "torchvision:alexnet", "--input-size", "16"], ["--input-size 16"]),
])
def test_extract_refuses_before_any_work_and_leaves_no_husk(tmp_path, capsys, argv, words):
    from lintorch.extract import main
    out = tmp_path / "out"
    code = main([*argv, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "no-images-needed"),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert not out.exists()


def test_extract_of_non_finite_features_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch, image_folder):
    from lintorch import extract as extract_mod
    from lintorch.features import base
    monkeypatch.setattr(base.Pixels, "transform", nan_transform)
    out = tmp_path / "out"
    code = extract_mod.main(["--features", "pixels", "--dataset", "imagefolder", "--data-dir", str(image_folder),
                             "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--device", "cpu",
                             "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN/inf" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "train.npy").exists() and not (out / "extractor.json").exists()


def test_extract_threads_takes_auto_and_defaults_to_it():
    from lintorch.extract import get_args_parser
    p = get_args_parser()
    assert p.parse_args(["--features", "hog", "--out", "x"]).threads == "auto"
    assert p.parse_args(["--features", "hog", "--out", "x", "--threads", "auto"]).threads == "auto"
    assert p.parse_args(["--features", "hog", "--out", "x", "--threads", "3"]).threads == 3
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--features", "hog", "--out", "x", "--threads", "0"])
    assert e.value.code == 2


def test_extract_chooses_threads_as_train_does(image_folder, tmp_path, monkeypatch):
    import json

    from lintorch import cli
    from lintorch.extract import main
    asked = []

    def choose(setting, rounds=5):
        asked.append(setting)
        torch.set_num_threads(1)
        return 1
    monkeypatch.setattr(cli, "choose_threads", choose)
    threads = torch.get_num_threads()
    try:
        assert main(["--features", "colorhist", "--out", str(tmp_path / "f"), "--dataset", "imagefolder",
                     "--data-dir", str(image_folder), "--cache-dir", str(tmp_path / "c"), "--device", "cpu",
                     "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert asked == ["auto"]
    assert json.loads((tmp_path / "f" / "extractor.json").read_text())["threads"] == 1


# --------------------------------------------------------------------------- the extract command

@pytest.mark.slow
def test_extract_end_to_end(image_folder, tmp_path):
    from lintorch.extract import main
    out = tmp_path / "hc"
    args = ["--dataset", "imagefolder", "--data-dir", str(image_folder), "--cache-dir", str(tmp_path / "cache"),
            "--device", "cpu", "--quiet"]
    assert main(["--features", "hog,colorhist", "--out", str(out), *args]) == 0
    tr, te = store.FeatureSplit(str(out), "train"), store.FeatureSplit(str(out), "test")
    assert (tr.n, tr.d, te.n, tr.classes) == (48, 154, 15, ["blue", "green", "red"])
    info = json.loads((out / "extractor.json").read_text())
    assert info["fingerprint"] == make_extractor("hog,colorhist").fingerprint()
    assert info["data"]["n_train"] == 48 and len(info["data"]["sha256_train"]) == 64
    # labels in folder order; the colours are told apart by the hue histogram
    assert torch.equal(tr.y, torch.arange(3).repeat_interleave(16))
    out2 = tmp_path / "km"
    threads = torch.get_num_threads()
    try:
        assert main(["--features", "kmeans", "--centroids", "4", "--patches", "500", "--format", "pt",
                     "--threads", "1", "--dtype", "float16", "--out", str(out2), *args]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    tr = store.FeatureSplit(str(out2), "train")
    assert (tr.n, tr.d, tr.dtype) == (48, 16, torch.float16)
    assert (out2 / "centroids.png").stat().st_size > 0
    ex = from_state_dict(torch.load(out2 / "extractor.pt", weights_only=True))
    assert ex.fingerprint() == json.loads((out2 / "extractor.json").read_text())["fingerprint"]
    # one-line errors, exit 2 (on the command line: tests/cli/test_extract.py)
    assert main(["--features", "kmeans", "--out", str(out2), *args]) == 2            # exists
    assert main(["--features", "sift", "--out", str(tmp_path / "x"), *args]) == 2
    assert main(["--features", "pixels", "--out", str(tmp_path / "y"), "--dataset", "imagefolder",
                 "--data-dir", str(tmp_path / "nowhere")]) == 2


def test_extract_writes_the_kmeans_recipes_features(image_folder, tmp_path):
    """Every extractor flag train.py has reaches extract (the --features kmeans recipe
    sets --power 0.5): the folder holds the features of those very settings."""
    from lintorch.data import load_dataset
    from lintorch.extract import main
    out = tmp_path / "recipe"
    assert main(["--features", "kmeans", "--centroids", "4", "--patches", "500", "--power", "0.5", "--encoding", "soft",
                 "--alpha", "0.3", "--zca-eps", "0.05", "--image-size", "16", "--dataset", "imagefolder",
                 "--data-dir", str(image_folder), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--threads", "1", "--quiet", "--out", str(out)]) == 0
    settings = json.loads((out / "extractor.json").read_text())["settings"]
    assert (settings["power"], settings["encoding"], settings["alpha"], settings["zca_eps"]) == (0.5, "soft", 0.3, 0.05)
    ex = from_state_dict(torch.load(out / "extractor.pt", weights_only=True))
    test = load_dataset("imagefolder", str(image_folder), 16, 12, 0, str(tmp_path / "cache")).test
    te = store.FeatureSplit(str(out), "test")
    assert te.d == 2 * 4 * 4                                             # soft: 2 K codes per region
    torch.testing.assert_close(te.rows(torch.arange(te.n)).float(), ex.transform(test.x))


# --------------------------------------------------------------------------- one place decides the device and TF32

def test_extract_answers_a_missing_gpu_in_one_line_and_uses_tf32_like_the_other_commands(emulated, image_folder,
                                                                                         tmp_path, capsys,
                                                                                         tf32_restored):
    from lintorch import extract
    argv = ["--features", "colorhist", "--data-dir", str(image_folder), "--dataset", "imagefolder",
            "--image-size", "8", "--threads", "1", "--quiet"]
    torch.backends.cuda.matmul.allow_tf32 = False
    with emulated():
        assert extract.main([*argv, "--device", "cuda:7", "--out", str(tmp_path / "seven")]) == 2
        assert "cuda:7" in helpers.one_error_line(capsys.readouterr().err)
        assert not (tmp_path / "seven").exists()
        assert extract.main([*argv, "--device", "cuda", "--out", str(tmp_path / "out")]) == 0
    assert torch.backends.cuda.matmul.allow_tf32
    assert helpers.read_json(tmp_path / "out" / "extractor.json")["device"] == "cuda"
