"""Commands that behave like the others: extract's --threads takes auto and defaults to it (torch's
own default oversubscribed a busy CPU: HOG on 50k JPEGs 48.5 s against 11 s with 1 thread)."""
import pytest
import torch


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


def _report(**benchmark):
    sec = {"gradcheck": {"passed": True, "checks": 177, "worst_rel_error": 1e-7, "seconds": 45.1},
           "tests": {"skipped": "--quick", "seconds": 0.0},
           "training": {"passed": False, "error": "RuntimeError: boom", "seconds": 2.0},
           "benchmark": {"epoch_seconds_lintorch": 0.7, "epoch_seconds_plain": 0.6, "epoch_vs_plain": 0.7 / 0.6,
                         "max_slowdown": 2.0, "passed": True, "seconds": 10.0, **benchmark},
           "determinism": {"equal": True, "max_abs_diff": 0.0, "passed": True, "seconds": 1.7}}
    return {"machine": {"card": None, "device": "cpu", "driver": None, "torch": "2", "cuda": None},
            "sections": sec, "seconds": 59.0, "passed": False}


def test_doctor_rows_stay_aligned_on_skipped_and_fail():
    from lintorch.doctor import format_table
    rows = format_table(_report()).splitlines()[1:-1]
    header = rows[0]
    col = header.index("seconds") + len("seconds")
    for row in rows[1:]:
        assert row[col - 1] in "0123456789" and row[col:col + 2] in ("  ", ""), row    # seconds end in one column
    assert "skipped" in rows[2] and "--quick" in rows[2] and "FAIL" in rows[3] and "boom" in rows[3]


def test_doctor_benchmark_can_fail(monkeypatch):
    """32.5x slower than plain PyTorch passed before: now it fails past --max-slowdown (default 2)."""
    from types import SimpleNamespace

    from lintorch import doctor
    from lintorch.bench import contenders
    from lintorch.data import Preprocess

    class Train(SimpleNamespace):
        def __len__(self):
            return len(self.y)
    data = SimpleNamespace(train=Train(x=torch.zeros(4, 3, 2, 2, dtype=torch.uint8), y=torch.zeros(4, dtype=torch.long)),
                           classes=["a", "b"])
    monkeypatch.setattr(Preprocess, "fit", classmethod(lambda cls, x, *a, **k: lambda t: t.float()))
    monkeypatch.setattr(contenders, "lintorch_epoch", lambda *a, **k: None)
    monkeypatch.setattr(contenders, "plain_epoch", lambda *a, **k: None)
    for slow, passed in ((32.53, False), (1.1, True)):
        monkeypatch.setattr(contenders, "alternate", lambda fns, rounds, slow=slow: {
            "lintorch softmax": [slow] * rounds, "plain PyTorch softmax": [1.0] * rounds})
        args = doctor.get_args_parser().parse_args(["--device", "cpu", "--quick"])
        r = doctor.benchmark(args, torch.device("cpu"), data)
        assert r["passed"] is passed and r["epoch_vs_plain"] == pytest.approx(slow)


def test_doctor_without_out_writes_no_file(tmp_path, monkeypatch, capsys):
    from lintorch import doctor
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(doctor, "run_doctor", lambda args, device, say: {**_report(), "passed": True})
    assert doctor.main(["--device", "cpu"]) == 0
    assert list(tmp_path.iterdir()) == [] and "not written" in capsys.readouterr().out
    assert doctor.main(["--device", "cpu", "--out", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").is_file()


def test_doctor_without_a_flag_on_a_cpu_machine_checks_the_cpu_and_says_why(tmp_path, monkeypatch, capsys):
    """No flag typed: no word of '--device cuda'; the user learns that no GPU was found and what
    runs instead. --device cuda typed on such a machine is still one line and exit 2."""
    from lintorch import doctor
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    devices = []
    monkeypatch.setattr(doctor, "run_doctor", lambda args, device, say: devices.append(device) or
                        {**_report(), "passed": True})
    assert doctor.main([]) == 0
    err = capsys.readouterr().err
    assert devices == [torch.device("cpu")] and "--device cuda" not in err
    assert err.startswith("no CUDA GPU found") and "checking the CPU instead" in err
    assert doctor.main(["--device", "cuda"]) == 2
    assert "--device cuda asked for CUDA" in capsys.readouterr().err


def test_doctor_quick_says_its_low_val_acc_is_expected():
    from lintorch.doctor import format_table
    epochs = [{"seconds": 0.1, "val_acc": 0.155, "loss": 2.3}, {"seconds": 0.1, "val_acc": 0.155, "loss": 2.2}]
    report = _report()
    report["sections"]["training"] = {"passed": True, "seconds": 1.0, **{
        loss: {"epochs": epochs, "host_syncs": 0} for loss in ("softmax", "svm")}}
    report["data"] = {"name": "synthetic", "train": 640, "val": 200, "classes": 10, "image_size": 8}
    report["settings"] = {"quick": True, "epochs": 2}
    text = format_table(report)
    assert "val 15.5%" in text and "chance 10.0%" in text
    assert "--quick: 640 training images of 8 px, 2 epochs: val acc near chance is expected" in text
    report["settings"]["quick"] = False
    assert "--quick" not in format_table(report).split("training", 1)[1].split("benchmark")[0]


def test_a_released_folder_keeps_no_lock_and_the_lock_still_excludes(tmp_path, monkeypatch):
    import os

    from lintorch.output import rundir
    from lintorch.errors import UserError
    folder = str(tmp_path)
    fd = rundir.claim_existing(folder)
    with pytest.raises(UserError, match="in use"):
        rundir.claim_existing(folder)                     # one process per folder, as before
    rundir.release(folder, fd)
    assert not os.path.exists(os.path.join(folder, rundir.LOCK))
    # a process that opened .lock just before its holder removed it locks a dead file: it must
    # notice and take the file that is there now, or two processes would both hold "the" lock
    real, calls = rundir.fcntl.flock, []

    def flock(f, op):
        if not calls:
            os.remove(os.path.join(folder, rundir.LOCK))      # the holder let go between our open and flock
        calls.append(f)
        return real(f, op)
    monkeypatch.setattr(rundir.fcntl, "flock", flock)
    fd = rundir.claim_existing(folder)
    monkeypatch.setattr(rundir.fcntl, "flock", real)
    assert len(calls) == 2 and os.path.samestat(os.fstat(fd), os.stat(os.path.join(folder, rundir.LOCK)))
    with pytest.raises(UserError, match="in use"):
        rundir.claim_existing(folder)
    rundir.release(folder, fd)


def test_finished_run_folder_has_no_lock(synthetic_run):
    assert not (synthetic_run / ".lock").exists()


def test_build_folder_is_ignored():
    import subprocess

    from tests.helpers import REPO
    p = subprocess.run(["git", "check-ignore", "-q", "build/lib/x.py"], cwd=REPO)
    if p.returncode == 128:
        pytest.skip("not a git checkout")
    assert p.returncode == 0


def test_readme_says_how_to_take_the_cpu_build_and_the_requirements_accept_it():
    """PyTorch's CPU wheels are versioned 2.14.1+cpu: requirements.txt's bounds must accept them (and the
    plain CUDA-build versions), or pip would replace the CPU build with PyPI's CUDA one."""
    from packaging.requirements import Requirement

    from tests.helpers import REPO
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (REPO / "README.md").read_text()
    reqs = {r.name: r for r in (Requirement(line.split("#")[0]) for line in (REPO / "requirements.txt").read_text()
                                .splitlines() if line.split("#")[0].strip())}
    torch_version = torch.__version__.split("+")[0]
    import torchvision
    vision = torchvision.__version__.split("+")[0]
    for name, v in (("torch", torch_version), ("torchvision", vision)):
        assert reqs[name].specifier.contains(v) and reqs[name].specifier.contains(f"{v}+cpu"), name


def test_first_run_shows_a_decoding_bar_and_a_cached_one_none(image_folder, tmp_path, monkeypatch):
    from lintorch.data import load_dataset
    from lintorch.output import progress
    bars = []
    real = progress.Progress

    class Bar(real):            # a tqdm bar on a terminal, lines in a log file: either way a Progress
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not self.disable:
                bars.append(self)
    monkeypatch.setattr(progress, "Progress", Bar)
    for _ in range(2):
        load_dataset("imagefolder", str(image_folder), 16, 12, 0, str(tmp_path / "cache"), progress=True)
    shown = [(b.desc, b.total, b.done) for b in bars]
    assert shown == [("decoding train images", 48, 48), ("decoding test images", 15, 15)]   # none when cached


def test_evaluate_test_split_decodes_no_training_image(folder_run, tmp_path, monkeypatch):
    from lintorch import evaluate
    from lintorch.data import imagecache
    decoded = []
    real = imagecache.decode

    def spy(files, *args, **kwargs):
        decoded.extend(files)
        return real(files, *args, **kwargs)
    monkeypatch.setattr(imagecache, "decode", spy)
    r = evaluate.evaluate_checkpoint(str(folder_run), split="test", cache_dir=str(tmp_path / "fresh"))
    assert r["n"] == 15 and decoded and all("/test/" in f for f in decoded)
    decoded.clear()
    assert evaluate.evaluate_checkpoint(str(folder_run), split="val", cache_dir=str(tmp_path / "fresh"))["n"] == 12
    assert any("/train/" in f for f in decoded)
