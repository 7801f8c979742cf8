"""lintorch.doctor: its rows, its benchmark, the CPU check, its host-sync expectations, on CUDA."""
import pytest
import torch

from tests.conftest import one_case_of_each_kind


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


@pytest.mark.slow
def test_doctor_quick_on_cuda(emulated, monkeypatch, capsys):
    """Every section on cuda; its gradient check with one_case_of_each_kind (all 201 on emulated CUDA took
    ~3 of this test's ~4 minutes, and test_gradcheck.py's [cuda] variant runs them)."""
    from lintorch import doctor
    one_case_of_each_kind(monkeypatch)
    with emulated():
        # emulation measures no speed: the benchmark's 2x limit is lifted (its logic: test_commands_ui)
        code = doctor.main(["--device", "cuda", "--quick", "--epochs", "1", "--max-slowdown", "1000"])
    out, err = capsys.readouterr()
    assert code == 0, out + err


def test_doctors_expected_host_syncs_are_the_syncs_made(emulated):
    """doctor's training section reports the syncs torch's sync-debug mode warns about against the count the
    loop should make: checks every --log-every steps and one read of the logged scalars."""
    from lintorch.data import load_dataset
    from lintorch.doctor import doctor_config, timed_epochs
    data = load_dataset("synthetic", None, image_size=8, val_size=500, seed=0)
    import dataclasses
    cfg = dataclasses.replace(doctor_config("synthetic", "softmax", 2, 8), log_every=4)   # 14 steps an epoch: 3 logs
    with emulated():
        record, _ = timed_epochs(cfg, torch.device("cuda"), data, sync_debug=True)
    assert record["host_syncs"] == record["expected_syncs"] > 0, record
