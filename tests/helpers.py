"""What the three test groups share, written once: the repository's path, train.py run in this
process, the subprocess runners (python, torchrun, popen and signal_after for a started process;
tests/forked.py holds the fork server's children, a torchrun job's ranks among them), the JSON and
TensorBoard event-file readers, the small data a few tests build, and the assertions on evaluate's
reports and one-line errors. Imported as `from tests.helpers import ...` (pytest's pythonpath holds
the repository root); tests/conftest.py hands some of them out as fixtures (run_cli, train_main,
read_json)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the shared real data sits beside the checkout: ../shared/data
SHARED_DATA = REPO.parent / "shared" / "data"
# the classes of the image_folder fixture (tests/conftest.py), each a noisy solid colour
FOLDER_COLOURS = {"blue": (40, 70, 200), "green": (50, 170, 60), "red": (210, 50, 40)}


# --------------------------------------------------------------------------- in this process

def train(*argv, threads=1):
    """train.py's exit status for argv, run in this process (monkeypatches hold). `--threads threads`
    is added unless argv names it or threads is None: CPU results are bit-identical for a given
    thread count, and --threads auto measures the machine's load."""
    from lintorch.config import parse_args
    from lintorch.train import train_command
    argv = [str(a) for a in argv]
    if threads is not None and "--threads" not in argv:
        argv += ["--threads", str(threads)]
    return train_command(parse_args(argv))


def without(argv, flag):
    """argv with `flag` and its value left out (e.g. --epochs for the optimizers that have no epochs)."""
    argv = list(argv)
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def events(logdir):
    """A run folder's TensorBoard event file(s), everything kept -> a loaded EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "histograms": 0,
                                                       "compressedHistograms": 0, "tensors": 0, "audio": 0})
    acc.Reload()
    return acc


def scalar_steps(logdir, tag):
    """The steps at which the run logged scalar `tag`, in file order."""
    return [e.step for e in events(logdir).Scalars(tag)]


def image_tree(root, n=4):
    """root/train/c0 (red) and c1 (green), n plain 8x8 PNGs each: the smallest ImageFolder."""
    from PIL import Image
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), colour).save(root / "train" / f"c{c}" / f"{i}.png")


class CodeRunningPickle:
    """Unpickled, it runs `touch $LINTORCH_PWNED` (the variable read when it is pickled): a crafted
    checkpoint payload that a safe loader must refuse."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('LINTORCH_PWNED', '/tmp/lintorch-pwned')}",))


# --------------------------------------------------------------------------- subprocesses

def python(*argv, timeout=600, env=None):
    """`python *argv` from the repository root -> CompletedProcess with text stdout/stderr."""
    return subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def torchrun(*argv, nproc=2, timeout=300):
    """train.py under `torchrun --standalone` (a free port), one thread per rank -> CompletedProcess."""
    return python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", nproc, "train.py", *argv,
                  timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def popen(*argv, env=None, stderr=subprocess.PIPE):
    """`python *argv` started from the repository root with text pipes -> the Popen. env: the
    child's environment, by default this one with PYTHONUNBUFFERED=1 (each line as it is printed,
    so a test can wait for one)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"} if env is None else env
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=stderr, text=True, preexec_fn=_ctrl_c_as_at_a_terminal)


def _ctrl_c_as_at_a_terminal():
    """The child starts with SIGINT's default action, as a command typed at a terminal does: a suite
    run in the background of a non-interactive shell inherits SIGINT ignored, and Python keeps an
    ignored SIGINT ignored (the extract signal test then saw exit 0)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signal_after(p, prefix, sig, delay, timeout=120):
    """Wait for p's first stdout line starting with prefix, wait delay, send sig, wait for p to end
    -> (exit status, all of its stdout, its stderr)."""
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith(prefix):
            break
    time.sleep(delay)
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"{sig!r} did not stop the run within {timeout} s")
    return p.returncode, "".join(seen) + out, err


def wait_for(path, proc, timeout=120):
    """Wait until `path` exists while proc keeps running."""
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.2)


# --------------------------------------------------------------------------- assertions

def evaluate_json(capsys, *argv):
    """lintorch.evaluate in this process with --json on the CPU -> its report."""
    from lintorch import evaluate
    assert evaluate.main([str(a) for a in argv] + ["--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_consistent(r, classes):
    """An evaluate report agrees with itself: confusion matrix, counts, accuracy, per-class accuracy."""
    import torch
    cm = torch.tensor(r["confusion"])
    assert cm.shape == (len(classes), len(classes)) and int(cm.sum()) == r["n"]
    assert r["classes"] == classes and r["correct"] == int(cm.diagonal().sum())
    assert r["accuracy"] == r["correct"] / r["n"]
    for c, name in enumerate(classes):
        row = int(cm[c].sum())
        assert r["per_class"][name] == (int(cm[c, c]) / row if row else None)


def assert_one_line_error(code, err, *words):
    """Exit status 2 and one stderr line "error: ..." holding every word, no traceback."""
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


def one_error_line(err):
    """stderr holds exactly one line, an error -> that line."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0], err
    return lines[0]
