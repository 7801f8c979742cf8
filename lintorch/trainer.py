"""Training a run: the Run (data, model, loaders, run folder, checkpoints, final report) and the
loops that train it: minibatch SGD / full-batch GD for one model or a sweep of K, and random search.

Shapes: N images, D = 3 * S * S features, C classes, K configurations in a sweep.
"""
import json
import logging
import math
import os
import time

import torch
from torchvision.io import write_png
from tqdm import tqdm

from .checkpoint import FORMAT, VERSION, check_compatible, load_checkpoint, save_atomic
from .data import Preprocess, load_dataset
from .engine import EpochStats, NonFiniteLoss, Objective, evaluate, lr_factor, train_one_epoch
from .loaders import TensorLoader, make_loader
from .model import LinearClassifier
from .monitor import Monitor, update_ratio
from .search import random_search
from .visualize import confusion_image, template_grid

log = logging.getLogger("lintorch")

def _fmt_pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


class Run:
    """One training run's state and outputs (a single model, or K stacked for a sweep)."""

    def __init__(self, args, device, resume_ckpt=None):
        self.args = args
        self.device = device
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        self.data = load_dataset(args.dataset, args.data_dir, args.image_size, args.val_size, args.seed,
                                 args.cache_dir, args.skip_bad_images)
        self.classes, C = self.data.classes, len(self.data.classes)
        if resume_ckpt is not None:
            check_compatible(resume_ckpt, args.resume, self.classes, args.image_size)
            self.preprocess = Preprocess.from_state_dict(resume_ckpt["preprocess"])
        else:
            self.preprocess = Preprocess.fit(self.data.train.x, args.mean, args.standardize)
        self.D = self.data.train.x[0].numel()
        self.image_shape = tuple(self.data.train.x.shape[1:])
        self.sweep = args.sweep
        K = len(self.sweep) if self.sweep else None
        torch.manual_seed(args.seed)
        model = LinearClassifier(self.D, C)
        if K is not None:  # every configuration starts from the same initial W
            stacked = LinearClassifier(self.D, C, num_models=K)
            with torch.no_grad():
                stacked.weight.copy_(model.weight.expand(K, C, self.D))
            model = stacked
        self.model = model.to(self.device)
        reg = args.reg if K is None else torch.tensor([c.get("reg", args.reg) for c in self.sweep],
                                                          device=self.device)
        self.objective = Objective(args.loss, reg, args.penalty, args.beta, args.margin, args.squared_hinge,
                                   args.svm_form)
        bs = len(self.data.train) if args.optimizer == "gd" else args.batch_size
        self.train_loader = make_loader(args.loader, self.data, "train", self.preprocess, bs, self.device,
                                        args.seed, shuffle=True, workers=args.workers)
        self.val_loader = TensorLoader(self.data.val, self.preprocess, 4096, self.device, shuffle=False)
        self.test_loader = None if self.data.test is None else \
            TensorLoader(self.data.test, self.preprocess, 4096, self.device, shuffle=False)
        self.logdir = args.logdir
        os.makedirs(self.logdir, exist_ok=True)

    # ---------------------------------------------------------------- checkpoints

    def checkpoint(self, weight, bias, epoch, step, global_step, best_val_acc, optimizer=None, extra=None,
                   sweep_config=None):
        """A single model's checkpoint; a sweep's carries its configuration's lr and reg."""
        config = {k: v for k, v in vars(self.args).items() if k != "sweep"}
        config.update(sweep_config or {})
        return {"format": FORMAT, "version": VERSION,
                "model": {"weight": weight.detach().cpu().clone(), "bias": bias.detach().cpu().clone()},
                "preprocess": self.preprocess.state_dict(), "classes": list(self.classes),
                "image_size": self.args.image_size, "in_features": self.D, "num_classes": len(self.classes),
                "loss": self.args.loss, "config": config, "epoch": epoch, "step": step,
                "global_step": global_step, "best_val_acc": best_val_acc,
                "optimizer": None if optimizer is None else optimizer.state_dict(), **(extra or {})}

    def save(self, ckpt, name, folder=None):
        """Atomically write ckpt as folder/name (folder: the run folder, or a sweep member's)."""
        save_atomic(ckpt, os.path.join(folder or self.logdir, name))

    def write_json(self, name, obj, folder=None):
        folder = folder or self.logdir
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=float)
        os.replace(tmp, os.path.join(folder, name))

    # ---------------------------------------------------------------- the end of a run

    def finish(self, monitor, weight, bias, hparams, metrics, step, folder=None):
        """Evaluate the kept model on the test split, draw its pictures, write metrics.json."""
        model = LinearClassifier.from_weights(weight.to(self.device), bias.to(self.device))
        test = evaluate(model, self.test_loader, num_classes=len(self.classes)) if self.test_loader else None
        shown = test or evaluate(model, self.val_loader, num_classes=len(self.classes))
        metrics["test_acc"] = None if test is None else float(test["acc"])
        cm_split = "test" if test else "val"
        monitor.image(f"confusion_matrix/{cm_split}", confusion_image(shown["confusion"], self.classes), step)
        grid = template_grid(weight, self.classes, self.image_shape)
        write_png(grid, os.path.join(folder or self.logdir, "templates.png"))
        final = {f"hparam/{k}": metrics[k] for k in ("val_acc", "train_acc", "test_acc") if metrics[k] is not None}
        monitor.hparams(hparams, final, step)
        self.write_json("metrics.json", metrics, folder)
        return metrics


def _hparams(args, cfg=None):
    h = {k: getattr(args, k) for k in ("loss", "optimizer", "lr", "reg", "penalty", "batch_size", "momentum",
                                       "schedule", "epochs", "margin", "seed", "dataset")}
    h.update(cfg or {})
    return h


def _per_model(t, k):
    """Element k of a (K,) tensor, or the number itself for a single model."""
    t = torch.as_tensor(t)
    return float(t.reshape(-1)[k]) if t.dim() else float(t)


def train_sgd(run, resume_ckpt=None, stop=None):
    """Minibatch SGD (or full-batch GD) for a single model or a sweep; -> exit status."""
    args, model, device = run.args, run.model, run.device
    K = len(run.sweep) if run.sweep else None
    names = ["run"] if K is None else [",".join(f"{k}={v:g}" for k, v in c.items()) for c in run.sweep]
    lr_scale = None if K is None else torch.tensor([c.get("lr", args.lr) for c in run.sweep], device=device)
    base_lr = args.lr if K is None else 1.0
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=args.momentum)
    steps_per_epoch = len(run.train_loader)
    total_steps = args.epochs * steps_per_epoch
    start_epoch, start_step, best_val, best_epoch, history = 0, 0, -1.0, None, []
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        start_epoch, start_step = resume_ckpt["epoch"], resume_ckpt["step"]
        best_val, best_epoch = resume_ckpt["best_val_acc"], resume_ckpt.get("best_epoch")
        history = resume_ckpt.get("history", [])
    global_start = start_epoch * steps_per_epoch + start_step
    monitors = [Monitor(run.logdir if K is None else os.path.join(run.logdir, n),
                        purge_step=global_start + 1 if resume_ckpt is not None else None) for n in names]
    for m, cfg in zip(monitors, run.sweep or [None]):
        m.config({**{k: v for k, v in vars(args).items() if k != "sweep"}, **(cfg or {})})

    def lr_at(step):
        return base_lr * lr_factor(args.schedule, step / total_steps)

    # the lecture's sanity check: tiny weights give loss ~ log C (softmax) or ~ (C - 1) * margin (SVM)
    expected = run.objective.expected_initial_loss(len(run.classes))
    if resume_ckpt is None:
        first = evaluate(model, run.val_loader, run.objective)["loss"]
        first0 = _per_model(first, 0)
        log.info(f"step 0: data loss {first0:.4f} (expected about {expected:.4f} for {args.loss} with small W)")
        if not math.isfinite(first0) or abs(first0 - expected) > 0.1 * expected + 0.05:
            log.warning(f"warning: the initial loss {first0:.4f} is far from {expected:.4f}: check the data "
                        f"and the initialization")
        for m in monitors:
            m.scalars({"loss/data": first0}, 0)

    best_w = model.weight.detach().clone()
    best_b = model.bias.detach().clone()
    best_vals = torch.full((K or 1,), best_val, dtype=torch.float64)
    best_path = os.path.join(run.logdir, "checkpoint.pt")
    if resume_ckpt is not None and os.path.exists(best_path):  # the best model so far, not the last
        kept = load_checkpoint(best_path)["model"]
        best_w, best_b = kept["weight"].to(device), kept["bias"].to(device)
    partial = None if resume_ckpt is None else resume_ckpt.get("partial")
    last_train = torch.full((K or 1,), math.nan, dtype=torch.float64)
    best_epochs = torch.full((K or 1,), best_epoch or 0, dtype=torch.long)

    def on_log(step, stats, extra):
        W = model.weight.detach()
        ratio, wn = update_ratio(extra["before"], W), torch.linalg.vector_norm(W, dim=(-2, -1))
        gn = torch.linalg.vector_norm(model.weight.grad, dim=(-2, -1))
        for k, m in enumerate(monitors):
            lr_k = extra["lr"] * (1.0 if lr_scale is None else _per_model(lr_scale, k))
            d, r = _per_model(extra["data"], k), _per_model(extra["reg"], k)
            m.scalars({"loss/data": d, "loss/reg": r, "loss/total": d + r, "lr": lr_k,
                       "norm/weight": _per_model(wn, k), "norm/grad": _per_model(gn, k) / (1.0 if lr_scale is None
                       else max(_per_model(lr_scale, k), 1e-30)),
                       "update_ratio": _per_model(ratio, k)}, step)
        if bar is not None:
            bar.set_postfix(loss=f"{_per_model(extra['data'], 0):.3f}")

    check_every = 1 if device.type == "cpu" else args.log_every
    seconds, images = 0.0, 0
    status, exit_code = "completed", 0
    epoch = start_epoch
    for epoch in range(start_epoch, args.epochs):
        first_step = start_step if epoch == start_epoch else 0
        n_train = len(run.data.train)  # the bar counts images, so its rate is the throughput
        bar = None if args.quiet else tqdm(total=n_train, initial=min(first_step * args.batch_size, n_train),
                                           leave=False, desc=f"epoch {epoch + 1}/{args.epochs}", unit="img",
                                           unit_scale=True)
        try:
            stats, next_step = train_one_epoch(model, run.train_loader, optimizer, run.objective, epoch,
                                               lr_at=lr_at, lr_scale=lr_scale, start=first_step,
                                               check_every=check_every, log_every=args.log_every,
                                               on_log=on_log, should_stop=stop, progress=bar,
                                               stats=EpochStats(**partial) if partial else None)
            partial = None
        except NonFiniteLoss as e:
            log.error(f"error: {e}; checkpoint.pt keeps the best model so far")
            status, exit_code = "diverged", 1
            break
        finally:
            if bar is not None:
                bar.close()
        seconds += stats.seconds
        images += stats.seen
        gstep = epoch * steps_per_epoch + (next_step or steps_per_epoch)
        if next_step is not None:  # interrupted: save where we are, resume continues from here
            if K is None:
                run.save(run.checkpoint(model.weight, model.bias, epoch, next_step, gstep, best_val, optimizer,
                                        {"best_epoch": best_epoch, "history": history,
                                         "partial": stats.state_dict()}), "last.pt")
            status, exit_code = "interrupted", 128 + stop.signum
            log.info(f"interrupted at epoch {epoch + 1}, step {next_step}: saved last.pt "
                     f"(continue with --resume {run.logdir})")
            break
        data_loss, reg_loss, train_acc = stats.means()
        val = evaluate(model, run.val_loader, run.objective)
        ips = stats.seen / max(stats.seconds, 1e-9)
        for k, m in enumerate(monitors):
            m.scalars({"acc/train": _per_model(train_acc, k), "acc/val": _per_model(val["acc"], k),
                       "loss/val": _per_model(val["loss"], k), "time/epoch_seconds": stats.seconds,
                       "time/images_per_second": ips}, gstep)
            w = model.weight[k] if K is not None else model.weight
            g = None if model.weight.grad is None else (model.weight.grad[k] if K is not None else model.weight.grad)
            m.epoch(gstep, w, g, template_grid(w, run.classes, run.image_shape))
        val_accs = val["acc"].reshape(-1)
        last_train = train_acc.reshape(-1)
        improved = val_accs > best_vals
        best_vals = torch.where(improved, val_accs, best_vals)
        best_epochs[improved] = epoch + 1
        with torch.no_grad():
            sel = improved.to(device)
            if K is None:
                if bool(improved[0]):
                    best_w, best_b = model.weight.detach().clone(), model.bias.detach().clone()
            else:
                best_w[sel] = model.weight.detach()[sel]
                best_b[sel] = model.bias.detach()[sel]
        history.append({"epoch": epoch + 1, "train_loss": _per_model(data_loss + reg_loss, 0),
                        "train_acc": _per_model(train_acc, 0), "val_acc": float(val_accs[0]),
                        "seconds": stats.seconds})
        if K is None:
            if bool(improved[0]):
                best_val, best_epoch = float(val_accs[0]), epoch + 1
                run.save(run.checkpoint(best_w, best_b, epoch + 1, 0, gstep, best_val, optimizer,
                                        {"best_epoch": best_epoch, "history": history}), "checkpoint.pt")
            run.save(run.checkpoint(model.weight, model.bias, epoch + 1, 0, gstep, best_val, optimizer,
                                    {"best_epoch": best_epoch, "history": history}), "last.pt")
            log.info(f"epoch {epoch + 1}/{args.epochs}  loss {_per_model(data_loss + reg_loss, 0):.4f} "
                     f"(data {_per_model(data_loss, 0):.4f} + reg {_per_model(reg_loss, 0):.4f})  "
                     f"train acc {_fmt_pct(_per_model(train_acc, 0))}  val acc {_fmt_pct(float(val_accs[0]))}  "
                     f"{stats.seconds:.2f}s  {ips:,.0f} img/s")
        else:
            kb = int(best_vals.argmax())
            best_val, best_epoch = float(best_vals[kb]), epoch + 1 if bool(improved[kb]) else best_epoch
            run.save(run.checkpoint(best_w[kb], best_b[kb], epoch + 1, 0, gstep, best_val, None,
                                    sweep_config=run.sweep[kb]), "checkpoint.pt")
            log.info(f"epoch {epoch + 1}/{args.epochs}  val acc best {_fmt_pct(best_val)} ({names[kb]})  "
                     f"{stats.seconds:.2f}s  {ips:,.0f} img/s")

    results = []
    final_train = None
    for k, m in enumerate(monitors):
        train_k = float(last_train[k]) if math.isfinite(last_train[k]) else None
        metrics = {"status": status, "train_acc": train_k,
                   "val_acc": float(best_vals[k]) if best_vals[k] >= 0 else None,
                   "best_epoch": int(best_epochs[k]) or None, "epochs": epoch + (status == "completed"),
                   "seconds": seconds, "images_per_second": images / max(seconds, 1e-9), "device": str(device),
                   "history": history if K is None else None}
        if K is not None:
            metrics["config"] = run.sweep[k]
        wk, bk = (best_w, best_b) if K is None else (best_w[k], best_b[k])
        if metrics["val_acc"] is not None:
            folder = None if K is None else os.path.join(run.logdir, names[k])
            end_step = (epoch + 1) * steps_per_epoch
            run.finish(m, wk, bk, _hparams(args, run.sweep[k] if K else None), metrics, end_step, folder)
            if K is not None:  # each configuration's best model in its own run folder
                run.save(run.checkpoint(wk, bk, epoch + 1, 0, end_step, metrics["val_acc"],
                                        sweep_config=run.sweep[k]), "checkpoint.pt", folder)
        m.close()
        results.append(metrics)
        final_train = metrics
    if K is not None:
        _report_sweep(run, names, results)
    elif final_train["val_acc"] is not None:
        log.info(f"done ({status}): best val acc {_fmt_pct(final_train['val_acc'])} at epoch {best_epoch}, "
                 f"test acc {_fmt_pct(final_train['test_acc'])}; {seconds:.1f}s training; run folder {run.logdir}")
    if status != "completed" and final_train["val_acc"] is None:
        run.write_json("metrics.json", final_train)
    return exit_code


def _report_sweep(run, names, results):
    order = sorted(range(len(results)), key=lambda k: -(results[k]["val_acc"] or -1))
    lines = [f"{'rank':>4}  {'configuration':<28} {'val acc':>8}"]
    for r, k in enumerate(order, 1):
        lines.append(f"{r:>4}  {names[k]:<28} {_fmt_pct(results[k]['val_acc']):>8}")
    log.info("sweep results (best first):\n" + "\n".join(lines))
    best = results[order[0]]
    run.write_json("metrics.json", {"status": best["status"], "best": best, "configs": results})
    log.info(f"best configuration {names[order[0]]}: checkpoint.pt in {run.logdir}")


def train_search(run, stop=None):
    """--optimizer random-search / random-local-search: keep the W with the lowest training loss."""
    args = run.args
    monitor = Monitor(run.logdir)
    monitor.config(vars(args))
    full = TensorLoader(run.data.train, run.preprocess, 4096, run.device, shuffle=False)
    local = args.optimizer == "random-local-search"
    bar = None if args.quiet else tqdm(total=args.trials, desc=args.optimizer, unit="trial", leave=False)

    def on_trial(done, best):
        monitor.scalars({"loss/total": best}, done)
        if bar is not None:
            bar.n = done
            bar.set_postfix(best=f"{best:.4f}")
            bar.refresh()
    t0 = time.perf_counter()
    W, b, best, _ = random_search(full, run.objective, len(run.classes), run.D, args.trials, run.device,
                                  args.seed, local=local, on_trial=on_trial)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    model = LinearClassifier.from_weights(W.to(run.device), b.to(run.device))
    train_acc = float(evaluate(model, full)["acc"])
    val_acc = float(evaluate(model, run.val_loader)["acc"])
    monitor.scalars({"acc/train": train_acc, "acc/val": val_acc}, args.trials)
    run.save(run.checkpoint(W, b, 1, 0, args.trials, val_acc), "checkpoint.pt")
    metrics = {"status": "completed", "train_acc": train_acc, "val_acc": val_acc, "best_epoch": 1, "epochs": 1,
               "seconds": seconds, "images_per_second": args.trials * len(run.data.train) / seconds,
               "device": str(run.device), "best_loss": best}
    run.finish(monitor, W.to(run.device), b.to(run.device), _hparams(args), metrics, args.trials)
    monitor.close()
    log.info(f"{args.optimizer}: best training loss {best:.4f} after {args.trials} trials; train acc "
             f"{_fmt_pct(train_acc)}, val acc {_fmt_pct(val_acc)}, test acc {_fmt_pct(metrics['test_acc'])}")
    return 0
