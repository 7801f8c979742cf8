"""What the three test groups share, written once: the repository's path, train.py run in this
process, the subprocess runners (python, torchrun, popen and signal_after for a started process,
Ranks for a torchrun job's processes without its launcher), the JSON and TensorBoard event-file
readers, the small data a few tests build, and the assertions on evaluate's reports and one-line
errors. Imported as `from tests.helpers import ...` (pytest's pythonpath holds the repository
root); tests/conftest.py hands some of them out as fixtures (run_cli, train_main, read_json)."""
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


# --------------------------------------------------------------------------- a torchrun job's ranks, no launcher

# what a rank needs, imported once by the fork server that every rank is forked from
RANK_PRELOAD = ["tests.helpers", "torch", "torch.distributed", "torch.utils.tensorboard", "torchvision.transforms",
                "PIL.Image", "lintorch.train", "lintorch.extract", "lintorch.config", "lintorch.data",
                "lintorch.features.kmeans", "lintorch.features.store", "lintorch.optim", "lintorch.output.hparams",
                "lintorch.output.monitor", "lintorch.output.visualize", "lintorch.training.distributed",
                "lintorch.training.fit", "lintorch.training.recipe", "lintorch.training.report",
                "lintorch.training.solvers", "lintorch.training.trainer"]


def free_port():
    """A local TCP port free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ranks:
    """The `world` processes of one torchrun job running `python -m module *argv` on the CPU (gloo), with
    the variables torchrun gives them (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and a
    free MASTER_PORT; rank 0 hosts the store) but without its launcher process. Each rank is a real
    process forked from multiprocessing's fork server, which imported torch and lintorch once for the
    whole session: a job costs its work, not three torch imports. Each rank's stdout and stderr go to
    files of their own. Popen-like: poll(), and result(timeout) -> CompletedProcess (returncode: the
    first failing rank's exit status, else 0; stdout and stderr: every rank's, in rank order)."""

    def __init__(self, *argv, module="lintorch.train", world=2):
        import multiprocessing
        import tempfile
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(RANK_PRELOAD)
        self.folder = tempfile.mkdtemp(prefix="lintorch-ranks-")
        port, argv = free_port(), [str(a) for a in argv]
        self.procs = [ctx.Process(target=_rank, args=(module, argv, rank, world, port, self.folder))
                      for rank in range(world)]
        for p in self.procs:
            p.start()

    def poll(self):
        """None while a rank runs, else the job's exit status."""
        if any(p.exitcode is None for p in self.procs):
            return None
        return next((p.exitcode for p in self.procs if p.exitcode), 0)

    def output(self, rank):
        """(stdout, stderr) of one rank so far ("" before the rank has opened its files)."""
        paths = [Path(self.folder, f"{rank}.{kind}") for kind in ("out", "err")]
        return tuple(p.read_text() if p.exists() else "" for p in paths)

    def result(self, timeout=300):
        """Wait for every rank (killed past timeout: the test fails) -> CompletedProcess."""
        import shutil
        t0 = time.time()
        for p in self.procs:
            p.join(max(0.0, timeout - (time.time() - t0)))
        stuck = [p for p in self.procs if p.exitcode is None]
        for p in stuck:
            p.kill()
            p.join()
        outs = [self.output(rank) for rank in range(len(self.procs))]
        shutil.rmtree(self.folder, ignore_errors=True)
        out, err = "".join(o for o, _ in outs), "".join(e for _, e in outs)
        if stuck:
            pytest.fail(f"{len(stuck)} rank(s) still running after {timeout} s\n{out}{err}")
        return subprocess.CompletedProcess(self.procs[0].name, self.poll(), out, err)

    def communicate(self, timeout=300):
        """As Popen's, for wait_for's report of a job that ended early -> (stdout, stderr)."""
        p = self.result(timeout)
        return p.stdout, p.stderr


def ranks(*argv, module="lintorch.train", world=2, timeout=300):
    """One torchrun job's ranks (Ranks), run to the end -> CompletedProcess."""
    return Ranks(*argv, module=module, world=world).result(timeout)


def _rank(module, argv, rank, world, port, folder):
    """One rank's process: torchrun's variables, stdout and stderr to the job's folder, the exit status of
    `module`.main(argv)."""
    import importlib
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    for fd, kind in ((1, "out"), (2, "err")):
        with open(os.path.join(folder, f"{rank}.{kind}"), "w") as f:
            os.dup2(f.fileno(), fd)
    try:
        code = importlib.import_module(module).main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


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
