"""lintorch's commands in processes forked from a server that has already imported torch and lintorch.

Each child is a real process (its own pid, signal handlers, exit status, stdout and stderr) that runs a
command's main(argv) as `python -m MODULE` would, without the ~3-5 s of CPU that a fresh interpreter
spends importing torch on this machine. The server is multiprocessing's forkserver: a fresh interpreter
started on first use (one per test process, so each xdist worker has its own) that imports PRELOAD and
forks every child from there, before any torch work has run in it. Ranks is a torchrun job's `world`
ranks, each such a child with torchrun's variables, without the launcher.

For the tests that start a command many times (kills at varied moments, racing runs, signals); how a
command starts (usage errors before torch is imported, Ctrl-C while importing, the train.py script
itself) stays tested with fresh interpreters (tests.helpers.python and popen). A child runs in the
repository root with the server's environment (this process's when the server started): a variable
monkeypatched in a test does not reach it.

    p = start("lintorch.train", "--dataset", "synthetic", ...)
    code, out, err = signal_after(p, "step 0", signal.SIGINT, 0.2)
    p = ranks("--dataset", "synthetic", ...)            # a torchrun job's ranks -> CompletedProcess
"""
import importlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.helpers import REPO

# what the session's one fork server imports before it forks any child: what a rank of train or extract
# needs, and the other commands
PRELOAD = ["tests.helpers", "torch", "torch.distributed", "torch.utils.tensorboard", "torchvision.transforms",
           "PIL.Image", "lintorch.train", "lintorch.extract", "lintorch.config", "lintorch.data",
           "lintorch.features.kmeans", "lintorch.features.store", "lintorch.optim", "lintorch.output.hparams",
           "lintorch.output.monitor", "lintorch.output.visualize", "lintorch.training.distributed",
           "lintorch.training.fit", "lintorch.training.recipe", "lintorch.training.report",
           "lintorch.training.solvers", "lintorch.training.trainer",
           "lintorch.evaluate", "lintorch.predict", "lintorch.gradcheck", "lintorch.doctor",
           "lintorch.verify.gradients"]


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _run(module, argv, out, err, threads, env):
    """In the child: stdout and stderr to the files out and err (a line at a time, as with
    PYTHONUNBUFFERED=1), SIGINT as at a terminal, torch's threads (as OMP_NUM_THREADS would set
    them) when given, the variables env (if any) added to the environment, then
    sys.exit(MODULE.main(argv))."""
    os.chdir(REPO)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    os.environ.update(env or {})
    sys.argv = [module, *argv]
    sys.exit(importlib.import_module(module).main(argv))


class Forked:
    """A command started in a forked child: send_signal, wait, and its output (stdout(), stderr())."""

    def __init__(self, module, argv, threads=None, env=None):
        self._folder = tempfile.mkdtemp(prefix="lintorch-forked-")
        self._files = [os.path.join(self._folder, name) for name in ("stdout", "stderr")]
        self._ended = None                 # (stdout, stderr) once the child has ended
        argv = [str(a) for a in argv]
        self.process = _context().Process(target=_run, args=(module, argv, *self._files, threads, env))
        self.process.start()
        self.pid = self.process.pid
        self.returncode = None

    def stdout(self):
        return self._ended[0] if self._ended else _read(self._files[0])

    def stderr(self):
        return self._ended[1] if self._ended else _read(self._files[1])

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def poll(self):
        """-> the exit status, None while the child runs."""
        return self.wait() if self.process.exitcode is not None else None

    def wait(self, timeout=300):
        """Wait for the end (its output is then kept and the files removed) -> the exit status
        (negative: the signal that killed it, as with subprocess)."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            pytest.fail(f"the child did not end within {timeout} s: {self.stderr()[-2000:]}")
        if self._ended is None:
            self._ended = self.stdout(), self.stderr()
            shutil.rmtree(self._folder, ignore_errors=True)
        self.returncode = self.process.exitcode
        return self.returncode

    def communicate(self, timeout=300):
        """-> (stdout, stderr) once the child has ended."""
        self.wait(timeout)
        return self._ended

    def wait_for_line(self, prefix, timeout=300):
        """Wait until a line of stdout starts with prefix while the child runs."""
        self._wait_until(lambda: any(line.startswith(prefix) for line in self.stdout().splitlines()),
                         f"a line starting {prefix!r}", timeout)

    def wait_for_file(self, path, timeout=300):
        """Wait until path exists while the child runs."""
        self._wait_until(lambda: os.path.exists(path), str(path), timeout)

    def _wait_until(self, done, what, timeout):
        t0 = time.monotonic()
        while not done():
            if self.poll() is not None:
                out, err = self.communicate()
                pytest.fail(f"exit {self.returncode} before {what}:\n{out[-2000:]}\n{err[-2000:]}")
            if time.monotonic() - t0 > timeout:
                self.process.kill()
                self.wait()
                pytest.fail(f"no {what} within {timeout} s")
            time.sleep(0.01)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:         # the child has not opened it yet
        return ""


def start(module, *argv, threads=None, env=None):
    """`python -m MODULE *argv` (MODULE.main(argv)) in a child of the forkserver -> Forked.
    threads: torch's CPU threads in the child (its default: the machine's cores); env: variables added
    to the child's environment."""
    return Forked(module, argv, threads, env)


def signal_after(p, prefix, sig, delay, timeout=120):
    """Wait for p's first stdout line starting with prefix, wait delay, send sig, wait for p to end
    -> (exit status, its stdout, its stderr): tests.helpers.signal_after for a Forked child."""
    p.wait_for_line(prefix, timeout)
    time.sleep(delay)
    p.send_signal(sig)
    out, err = p.communicate(timeout)
    return p.returncode, out, err


# --------------------------------------------------------------------------- a torchrun job's ranks, no launcher

def free_port():
    """A local TCP port free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ranks:
    """The `world` processes of one torchrun job running `python -m module *argv` on the CPU (gloo), with
    the variables torchrun gives them (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and a
    free MASTER_PORT; rank 0 hosts the store) but without its launcher process. Each rank is a Forked
    child of the session's fork server: a job costs its work, not three torch imports. Each rank's stdout
    and stderr go to files of their own. Popen-like: poll(), and result(timeout) -> CompletedProcess
    (returncode: the first failing rank's exit status, else 0; stdout and stderr: every rank's, in rank
    order); procs: the ranks' multiprocessing processes (kill, join, exitcode)."""

    def __init__(self, *argv, module="lintorch.train", world=2):
        port = free_port()
        self.ranks = [Forked(module, argv, env=dict(
            RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")) for rank in range(world)]
        self.procs = [r.process for r in self.ranks]

    def poll(self):
        """None while a rank runs, else the job's exit status."""
        if any(p.exitcode is None for p in self.procs):
            return None
        return next((p.exitcode for p in self.procs if p.exitcode), 0)

    def output(self, rank):
        """(stdout, stderr) of one rank so far ("" before the rank has opened its files)."""
        return self.ranks[rank].stdout(), self.ranks[rank].stderr()

    def result(self, timeout=300):
        """Wait for every rank (killed past timeout: the test fails) -> CompletedProcess."""
        t0 = time.time()
        for p in self.procs:
            p.join(max(0.0, timeout - (time.time() - t0)))
        stuck = [p for p in self.procs if p.exitcode is None]
        for p in stuck:
            p.kill()
            p.join()
        outs = [r.communicate() for r in self.ranks]
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
