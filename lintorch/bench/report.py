"""The benchmark's targets, its text table and its JSON file. A row is a dict: section, name,
seconds (the median), all (every round's seconds), per_second (images or examples per second, or
None), note; the memory row has bytes instead of a rate.
"""
import json
import math
import os

TARGETS = {"epoch_vs_plain": 0.8, "epoch_vs_plain_at_worst": 1.0, "epoch_vs_bound": 1.5,
           "dataloader_speedup": 10.0, "loss_vs_torch": 1.0, "peak_rss_bytes": 1.5e9, "time_to_acc_s": 3.0,
           "bookkeeping": 0.20, "loaded_vs_idle": 2.0}

PROCESS, BOOKKEEPING, THREADS = "process epoch", "bookkeeping", "threads under load"


def _median(rows, section, name):
    return next((r["seconds"] for r in rows if r["section"] == section and r["name"] == name), None)


def check_targets(rows):
    """-> [{target, value, ok, status, text}]: the benchmark's targets as measured ratios; misses stay visible."""
    out = []

    def add(text, value, limit, soft=None, unit="x", higher=False):
        if value is None:
            return
        ok = value >= limit if higher else value <= limit
        status = "pass" if ok else ("pass at worst" if soft is not None and value <= soft else "MISS")
        out.append({"target": text, "value": value, "limit": limit, "ok": ok, "status": status,
                    "text": f"{status:>13}  {text}: {value:.3g}{unit}"})
    lint = {k: _median(rows, "epoch", f"lintorch {k}") for k in ("softmax", "svm")}
    bound = _median(rows, "epoch", "GEMM bound")
    for k in lint:
        plain = _median(rows, "epoch", f"plain PyTorch {k}")
        if lint[k] and plain:
            add(f"lintorch {k} epoch <= 0.8x plain PyTorch (at worst 1.0x)", lint[k] / plain,
                TARGETS["epoch_vs_plain"], TARGETS["epoch_vs_plain_at_worst"])
    for k in lint:
        if lint[k] and bound:
            add(f"lintorch {k} epoch <= 1.5x GEMM bound", lint[k] / bound, TARGETS["epoch_vs_bound"])
    one = _median(rows, "sweep epoch", "one configuration")
    sweep = next((r for r in rows if r["section"] == "sweep epoch" and r["name"] != "one configuration"), None)
    if one and sweep:
        add(f"{sweep['name']} costs <= 4x one configuration", sweep["seconds"] / one, 4.0)
    dl = [r["seconds"] for r in rows if r["section"] == "epoch" and r["name"].startswith("DataLoader")]
    if dl and lint["softmax"]:
        add("lintorch softmax epoch >= 10x faster than the fastest per-image DataLoader", min(dl) / lint["softmax"],
            TARGETS["dataloader_speedup"], higher=True)
    for sec in sorted({r["section"] for r in rows if r["section"].startswith("loss")}):
        for ours, theirs in (("lintorch softmax_loss", "torch F.cross_entropy"),
                             ("lintorch svm_loss", "torch C*F.multi_margin_loss")):
            add(f"{ours} fwd+bwd <= 1.0x {theirs} at {sec[5:]}", _median(rows, sec, ours) / _median(rows, sec, theirs),
                TARGETS["loss_vs_torch"])
    mem = next((r for r in rows if r["section"] == "memory"), None)
    if mem:
        add("peak RSS of a CIFAR-10 training run <= 1.5 GB", mem["bytes"] / 1e9, TARGETS["peak_rss_bytes"] / 1e9,
            unit=" GB")
    tta = next((r for r in rows if r["section"] == "time to acc" and r["name"] == "lintorch defaults"), None)
    if tta:
        value = tta["seconds"] if tta["reached"] else math.inf
        add("lintorch time to 40% val acc <= 3 s", value, TARGETS["time_to_acc_s"], unit=" s")
    extra, loop = _median(rows, PROCESS, "bookkeeping per epoch"), _median(rows, PROCESS, "loop epoch")
    if extra is not None and loop:
        add("train.py's per-epoch bookkeeping (process epoch - loop epoch) <= 20% of the loop epoch",
            extra / loop, TARGETS["bookkeeping"], unit="")
    idle, loaded = _median(rows, THREADS, "idle, --threads auto"), _median(rows, THREADS, "loaded, --threads auto")
    if idle and loaded:
        add("epoch beside a 2-thread job <= 2x the idle epoch with --threads auto", loaded / idle,
            TARGETS["loaded_vs_idle"])
    return out


def _reference(rows, section, name):
    """The row a row is compared with in the 'x ref' column."""
    if section == "epoch":
        return _median(rows, section, "lintorch svm" if "svm" in name else "lintorch softmax")
    if section.startswith("loss"):
        return _median(rows, section, "lintorch svm_loss" if "svm" in name or "margin" in name
                       else "lintorch softmax_loss")
    if section == "time to acc":
        return _median(rows, section, "lintorch defaults")
    if section in (PROCESS, BOOKKEEPING):
        return _median(rows, section, "loop epoch")
    if section == THREADS:
        return _median(rows, section, "idle, --threads auto")
    return None


def format_table(res):
    """The results as a text table: contender, median, ratio to its section's reference, to the GEMM
    bound, throughput, note."""
    rows, m = res["rows"], res["machine"]
    lines = [f"{m['device_name']} ({m['device']}), torch {m['torch']}, {m['threads']} threads, "
             f"load average {', '.join(f'{v:.1f}' for v in m['load_average'] or ())}",
             f"{'contender':<30} {'median':>10} {'x ref':>10} {'x bound':>8} {'per s':>11}  note"]
    bound = _median(rows, "epoch", "GEMM bound")
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            lines.append(f"-- {section}")
        if "bytes" in r:
            lines.append(f"{r['name']:<30} {r['bytes'] / 1e9:>8.3f}GB {'':>10} {'':>8} {'':>11}  {r['note']}")
            continue
        ref = _reference(rows, section, r["name"])
        if section.startswith("loss"):
            median = f"{r['seconds'] * 1e6:>8.1f}us"
        elif section == BOOKKEEPING:
            median = f"{r['seconds'] * 1e3:>8.1f}ms"
        else:
            median = f"{r['seconds']:>9.3f}s"
        ratio = f"{r['seconds'] / ref:>10.2f}" if ref else f"{'':>10}"
        vs_bound = f"{r['seconds'] / bound:>8.2f}" if section == "epoch" and bound else f"{'':>8}"
        per_s = f"{r['per_second']:>11,.0f}" if r["per_second"] else f"{'':>11}"
        lines.append(f"{r['name']:<30} {median} {ratio} {vs_bound} {per_s}  {r['note']}")
    load = max((m.get(k) or (0,))[0] for k in ("load_average", "load_average_end"))
    if load > (m["cpus"] or 1):
        lines.append(f"note: load average {load:.1f} > {m['cpus']} CPUs: other processes share this machine, and "
                     f"torch's multi-threaded kernels wait for preempted threads; try --threads 1 to compare")
    lines.append("-- targets")
    lines += [t["text"] for t in res["targets"]]
    return "\n".join(lines)


def write_json(res, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=2, default=float)
