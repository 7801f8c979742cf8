"""The CUDA path on a real GPU, in one command of under 8 minutes on one H100:

    python -m lintorch.bench.gpu_check [--out gpu-check]

runs `python -m lintorch.doctor --device cuda` (gradient checks with TF32 off, the suite's [cuda] tests on
the GPU, each loss trained with its host syncs counted against the expected number, the benchmark against
plain PyTorch, determinism) and `python -m lintorch.bench --device cuda` (epochs, a 16-member sweep, the
losses, bookkeeping on 50,000 random images), each under its own time limit, then prints the card, the
timings and every failure, and writes both JSON reports under --out. Exit status 0 when both passed, 1 when
one failed or ran out of time, 2 without a GPU.

This is what the tests' emulated CUDA (tests/emulated_cuda.py) cannot see: CUDA kernels and TF32 numerics,
memory, streams, NCCL and speed.
"""
import argparse
import json
import os
import subprocess
import sys
import time

# seconds: together under 8 minutes, each command stopped at its limit (a hang is a failure, not a wait)
DOCTOR_LIMIT, BENCH_LIMIT = 270, 180


def _run(name, argv, limit):
    """One command as a subprocess, its output shown as it comes -> (exit status or "timeout", seconds)."""
    t0 = time.perf_counter()
    print(f"== {name}: {' '.join(argv)} (limit {limit} s)", flush=True)
    try:
        code = subprocess.run([sys.executable, "-m", *argv], timeout=limit).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    return code, time.perf_counter() - t0


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lintorch.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-check", help="folder for doctor.json and bench.json")
    args = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("error: no GPU here (torch.cuda.is_available() is False); this check is for a CUDA machine",
              file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    print(f"card: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}; "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    doctor_json, bench_json = os.path.join(args.out, "doctor.json"), os.path.join(args.out, "bench.json")
    results = {
        "doctor": _run("doctor", ["lintorch.doctor", "--device", "cuda", "--out", doctor_json,
                                  "--pytest-timeout", "150"], DOCTOR_LIMIT),
        "bench": _run("bench", ["lintorch.bench", "--device", "cuda", "--json", bench_json, "--repeats", "3",
                                "--subset", "1000", "--epoch-budget", "40"], BENCH_LIMIT),
    }
    print(f"\n== GPU check on {props.name}")
    failed = []
    for name, (code, seconds) in results.items():
        print(f"{name:8s} {'passed' if code == 0 else f'FAILED ({code})'} in {seconds:.0f} s")
        if code != 0:
            failed.append(name)
    doctor = _read(doctor_json) or {}
    for section, rec in (doctor.get("sections") or {}).items():
        if isinstance(rec, dict) and rec.get("passed") is False:
            print(f"doctor section failed: {section}: {str(rec.get('note') or rec.get('error') or '')[:200]}")
    for row in (_read(bench_json) or {}).get("rows", []):
        if row.get("section", "").startswith(("epoch", "sweep")):
            print(f"bench {row['section'][:28]:28s} {row['name']:28s} {row['seconds'] * 1e3:10.2f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
