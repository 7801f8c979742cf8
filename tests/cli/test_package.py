"""The package as a user installs it: a wheel built from a copy of the checkout holds every
subpackage, installs, and from a folder outside the checkout imports every module and trains one
synthetic run through the `lintorch` console script (then evaluates it)."""
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                               "bench-results")


def SKIP(folder, names):
    """What the copy leaves out: build leftovers anywhere, and the checkout's own data folder (./data,
    downloads), not the lintorch.data package."""
    return set(_SKIP(folder, names)) | ({"data"} & set(names) if Path(folder).resolve() == REPO else set())


def _run(*argv, cwd, env=None, timeout=600):
    p = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def test_the_wheel_installs_and_trains_from_outside_the_checkout(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    # built by the backend pyproject.toml names, called as a PEP 517 frontend calls it, in one process (`pip wheel
    # --no-build-isolation` ran it in three more of its own: ~7 s against ~2 s here, under load)
    backend = re.search(r'build-backend\s*=\s*"([^"]+)"', (src / "pyproject.toml").read_text()).group(1)
    _run(sys.executable, "-c", f"import {backend} as b; b.build_wheel({str(tmp_path / 'dist')!r})", cwd=src)
    wheel, = (tmp_path / "dist").glob("lintorch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [p.relative_to(REPO).parent.as_posix() for p in (REPO / "lintorch").rglob("__init__.py")]
    assert {"lintorch/features", "lintorch/bench"} <= set(packages)
    assert [p for p in packages if f"{p}/__init__.py" not in names] == []
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lintorch = lintorch.__main__:main" in zipfile.ZipFile(wheel).read(entry).decode()

    site = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel, cwd=tmp_path)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    modules = [m.name for m in pkgutil.walk_packages([str(site / "lintorch")], "lintorch.")]
    assert "lintorch.features.store" in modules and "lintorch.bench.contenders" in modules
    script = site / "bin" / "lintorch"
    assert "usage: lintorch COMMAND" in _run(script, "--help", cwd=away, env=env).stdout
    run = away / "run"
    train = [str(script), "train", "--dataset", "synthetic", "--image-size", "8", "--epochs", "1", "--threads", "1",
             "--quiet", "--logdir", str(run)]
    # every module imports, then the console script trains in the same interpreter (one torch import fewer;
    # the script runs as a process of its own for --help above and evaluate below)
    code = ("import importlib, runpy, sys, lintorch\n"
            f"assert lintorch.__file__.startswith({str(site)!r}), lintorch.__file__\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print('ok', len(sys.modules))\n"
            f"sys.argv = {train!r}\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    _run(sys.executable, "-c", code, cwd=away, env=env)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["val_acc"] is not None
    out = _run(script, "evaluate", run, "--json", "--threads", 1, cwd=away, env=env).stdout
    assert json.loads(out)["accuracy"] == metrics["val_acc"]
    bad = subprocess.run([str(script), "train", "--lr", "0"], cwd=away, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("lintorch train: error:"), bad.stderr
