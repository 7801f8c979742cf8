"""The one-shot drivers around a Run: full-batch L-BFGS for its K members (a whole regularization
path in one pass per evaluation; lbfgs.py is the solver), the exact least-squares path (exact.py)
and the lecture's random search. Each ends the run the Trainer's way: every Run.member_done, then
Run.finish.

Shapes: N training images, D features, C classes, K members (weights (K, C, D)).
The objective is the mean one, (1/N) sum_i w_{y_i} L_i + reg * sum W^2 (bias unpenalized), which is
scikit-learn's C * sum_i L_i + 1/2 ||W||^2 divided by C N at reg = 1 / (2 C N).
"""
import functools
import logging
import time

import torch
from tqdm import tqdm

from .. import functional as LF
from ..cli import loss_text
from ..data import Split, free_memory
from ..errors import DataError, UserError
from ..model import LinearClassifier
from ..optim.kernel import kernel_preconditioners
from ..optim.lbfgs import full_batch_evaluator, lbfgs
from ..optim.precondition import gram_preconditioners
from .epoch import evaluate
from .members import pct
from .recipe import eval_loader, full_batch_loader, kept_eval_loader, mirrors_on_the_fly

log = logging.getLogger("lintorch")


class Chained:
    """Loaders one after another: the batches of each in turn (full-batch passes only)."""

    def __init__(self, loaders):
        self.loaders = loaders

    def __len__(self):
        return sum(len(lo) for lo in self.loaders)

    def batches(self, epoch=0, start=0):
        for lo in self.loaders:
            yield from lo.batches(epoch)


ASK_MEMORY = 64 * 2 ** 20


def _preconditioners(cfg, full, reg, K, C, N, D, device):
    """--precondition gram or auto: each member's (X^T X / N + 2 reg I)^-1, by a D x D Cholesky
    factor each where N >= D, in low-rank kernel form (optim.kernel, one factorization shared by
    all) where N < D; or None (none, or not enough memory: half of what is free on `device`, where
    full's batches and so the factors are, asked only where they could need more than ASK_MEMORY)."""
    mode = cfg.precondition
    if mode == "none":
        return None
    t = time.perf_counter()
    regs = torch.as_tensor(reg, dtype=torch.float64).reshape(-1).expand(K)
    # the most either form could hold (float64; the kernel form's rank at most 256): under ASK_MEMORY
    # bytes the free memory is not asked (reading it costs more than a small problem's whole build)
    most = 8 * ((K + 2) * D * D if N >= D else (N + 512) * D)
    free = free_memory(device) if most > ASK_MEMORY else None
    build = kernel_preconditioners if N < D else gram_preconditioners      # the same M, the cheaper form
    try:
        pre, why = build(full, regs, C, memory=None if free is None else free // 2)
    except FloatingPointError as e:
        raise DataError(f"--precondition gram: {e}: the inputs are too large or not finite; check them, or "
                        f"pass --precondition none") from None
    if pre is None:
        log.warning(f"--precondition gram skipped ({why}, half the free memory is the limit): plain L-BFGS")
    else:
        log.info(f"lbfgs: Gram preconditioners for {K} member(s) in {time.perf_counter() - t:.1f}s")
    return pre


def fit_lbfgs(run):
    """--optimizer lbfgs: every member to convergence (or --max-iter), then each reports like a
    trained model. SIGINT/SIGTERM stop all members at their last accepted point (no resume: the
    solver's curvature history is not saved). -> exit status."""
    cfg, r = run.cfg, run.recipe
    obj = r.objective
    full = full_batch_loader(r.data.train, r.preprocess, run.device)   # the whole split, in large batches
    if mirrors_on_the_fly(cfg):     # full-batch: every training image and its mirror image (N doubles)
        mirrored = Split(r.data.train.x.flip(-1), r.data.train.y)
        full = Chained([full, full_batch_loader(mirrored, r.preprocess, run.device)])
    evaluate_fn = full_batch_evaluator(full, obj)
    # no total: --max-iter is a cap, not a forecast (a run that converges at evaluation 28 of a
    # 1,000 cap showed an ETA of hours); the bar counts evaluations and shows the iterations reached
    bar = None if cfg.quiet else tqdm(desc="lbfgs", unit="eval", leave=False)
    K = len(run.members)

    logged = [0] * K

    def on_iter(calls, recs):      # each accepted iterate once, the last (converged) one included
        for k, rec in enumerate(recs):
            if rec.iterations > logged[k]:
                run.report.on_scalars(run, k, {"lbfgs/objective": rec.trace[-1], "lbfgs/grad_max": rec.grad_max},
                                      rec.iterations)
                logged[k] = rec.iterations
        if bar is not None:
            bar.update(1)
            bar.set_postfix(iterations=max(rec.iterations for rec in recs),
                            running=f"{sum(rec.status == 'running' for rec in recs)}/{K}")
    W0, b0 = r.model.weight.detach(), r.model.bias.detach()
    t0 = time.perf_counter()
    N = len(r.data.train) * (2 if mirrors_on_the_fly(cfg) else 1)
    pre = _preconditioners(cfg, full, obj.reg, K, W0.shape[1], N, W0.shape[2], run.device)
    res = lbfgs(evaluate_fn, W0, b0, max_iter=cfg.max_iter, tol=cfg.tol, history=cfg.history,
                on_iter=on_iter, should_stop=run.stop, precondition=pre)
    run.stop.saving = True  # the solver's answer is in hand: a second Ctrl-C now would lose it for seconds saved
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    W, b = res.W.to(run.device, W0.dtype), res.b.to(run.device, b0.dtype)
    notes = [f"lbfgs {res.status[k]} after {int(res.iterations[k])} iterations ({int(res.evaluations[k])} "
             f"evaluations), objective {float(res.f[k]):.6g}, max |gradient| {float(res.grad_max[k]):.2e}"
             for k in range(K)]
    extras = [{"objective": float(res.f[k]), "solver_status": res.status[k], "iterations": int(res.iterations[k])}
              for k in range(K)]
    return _finish(run, full, W, b, res.f, res.status, res.iterations, notes, extras, seconds,
                   res.calls * len(r.data.train))


def _finish(run, full, W, b, f, statuses, steps, notes, extras, seconds, images):
    """The full-batch solvers' ending: every member's accuracies (the training accuracy only where
    run.train_accuracy asks for it), kept model and outcome (Run.member_done), then Run.finish.
    W (K, C, D), b (K, C) on the run's device; f (K,) objectives -> exit status."""
    r, K = run.recipe, len(run.members)
    scores = functools.partial(LF.linear, weight=W.contiguous(), bias=b.contiguous())   # the K models, no module
    train_acc = evaluate(scores, full)["acc"] if run.train_accuracy else None
    val = evaluate(scores, r.val_loader)["acc"]
    solver = run.cfg.optimizer
    results = []
    for k, m in enumerate(run.members):
        status, step = statuses[k], int(steps[k])
        m.history.append({"epoch": 1, "train_loss": float(f[k]),
                          "train_acc": None if train_acc is None else float(train_acc[k]),
                          "val_acc": float(val[k]), "seconds": seconds})
        accuracies = {f"{solver}/val_acc": val[k]} if train_acc is None else \
            {f"{solver}/train_acc": train_acc[k], f"{solver}/val_acc": val[k]}
        run.report.on_scalars(run, k, accuracies, step)
        if status == "nonfinite":
            m.diverged(1, step, 0.0)
        else:
            m.end_epoch(1, float(val[k]), None)
            run.report.on_best(run, k, W[k], b[k], 1)
            run.report.flush()
        m.note = notes[k]
        end = "interrupted" if status == "stopped" else "completed"
        results.append(run.member_done(k, W[k], b[k], end, step, seconds, images, extras[k]))
    for m in run.members:           # before the ending, which ends on the answer
        log.info(f"{m.name}: {m.note}; val acc {pct(m.best_val)}")
    return run.finish(results, "interrupted" if run.stop() else "completed", list(zip(W, b)))


class SingularInputs(UserError, ValueError):
    """--optimizer exact at a reg where the training inputs' Gram is singular: one line naming the
    reg, who set it (the user, a sweep, a --features recipe) and what to do."""

    def __init__(self, reg, D, N, cfg):
        setter = (f" (set by the --features {cfg.features} preset)" if "reg" in (cfg.preset_text() or "")
                  else " (in --sweep)" if cfg.sweep else "")
        super().__init__(f"--optimizer exact at --reg {reg:g}{setter}: the {'D' if D <= N else 'N'} x "
                         f"{'D' if D <= N else 'N'} Gram of the training inputs (D = {D}, N = {N}) is singular (a "
                         f"constant or repeated feature{'' if D <= N else ', or repeated examples'}), so the "
                         f"least-squares fit has no unique answer: use --reg > 0 (e.g. 1e-6)")


def fit_exact(run):
    """--optimizer exact: the squared loss's minimizer for every member's reg in closed form
    (lintorch.optim.exact): one streamed pass builds the float64 Gram, then each reg is solved exactly
    (the dual, from the kernel, when D > N). Members differ by reg only. -> exit status."""
    from ..optim import exact
    cfg, r = run.cfg, run.recipe
    full = kept_eval_loader(r.data.train, r.preprocess, run.device)     # the Gram's pass, then the accuracy's
    if mirrors_on_the_fly(cfg):     # every training image and its mirror image (N doubles)
        mirrored = Split(r.data.train.x.flip(-1), r.data.train.y)
        full = Chained([full, kept_eval_loader(mirrored, r.preprocess, run.device)])
    K, C, D = r.model.weight.shape
    regs = torch.as_tensor(r.objective.reg, dtype=torch.float64).reshape(-1).expand(K).clone()
    N = len(r.data.train) * (2 if mirrors_on_the_fly(cfg) else 1)
    t0 = time.perf_counter()
    try:
        if D <= N:
            stats = exact.gram_stats(full.batches(0), C)
            log.info(f"exact: the {D} x {D} Gram of {N} examples in {time.perf_counter() - t0:.1f}s")
            W, b, f = exact.primal_path(stats, regs)
        else:
            X = torch.cat([xb for xb, _ in full.batches(0)])                       # (N, D)
            y = torch.cat([yb for _, yb in full.batches(0)])
            W, b, f = exact.dual_path(lambda: (X[:, j:j + 4096] for j in range(0, D, 4096)), y, C, regs)
            del X
    except exact.SingularGram as e:
        raise SingularInputs(e.reg, D, N, cfg) from None
    seconds = time.perf_counter() - t0
    W, b = W.to(run.device, r.model.weight.dtype), b.to(run.device, r.model.bias.dtype)
    notes = [f"exact ({'primal' if D <= N else 'dual'}), objective {float(f[k]):.6g}" for k in range(K)]
    extras = [{"objective": float(f[k]), "solver_status": "exact"} for k in range(K)]
    return _finish(run, full, W, b, f, ["exact"] * K, [1] * K, notes, extras, seconds, N)


def fit_search(run):
    """--optimizer random-search / random-local-search: keep the W with the lowest training loss.
    Honours SIGINT/SIGTERM: stops after the current chunk of trials, keeps the best so far."""
    from ..optim.search import random_search
    cfg, r, member = run.cfg, run.recipe, run.members[0]
    full = eval_loader(r.data.train, r.preprocess, run.device)
    bar = None if cfg.quiet else tqdm(total=cfg.trials, desc=cfg.optimizer, unit="trial", leave=False)

    def on_trial(done, best):
        run.report.on_scalars(run, 0, {"loss/total": best}, done)
        if bar is not None:
            bar.n = done
            bar.set_postfix(best=loss_text(best))
            bar.refresh()
    t0 = time.perf_counter()
    W, b, best, history = random_search(full, r.objective, num_classes=len(r.classes), in_features=r.model.in_features,
                                        trials=cfg.trials, device=run.device, seed=cfg.seed,
                                        local=cfg.optimizer == "random-local-search",
                                        on_trial=on_trial, should_stop=run.stop)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    done = len(history)
    W, b = W.to(run.device), b.to(run.device)
    model = LinearClassifier.from_weights(W, b)
    train_acc, val_acc = float(evaluate(model, full)["acc"]), float(evaluate(model, r.val_loader)["acc"])
    run.report.on_scalars(run, 0, {"acc/train": train_acc, "acc/val": val_acc}, done)
    member.history.append({"epoch": 1, "train_loss": best, "train_acc": train_acc, "val_acc": val_acc,
                           "seconds": seconds})
    member.end_epoch(1, val_acc, None)
    status = "interrupted" if run.stop() else "completed"
    member.note = f"best training loss {loss_text(best)} after {done} of {cfg.trials} trials"
    run.report.on_best(run, 0, W, b, 1)
    run.report.flush()
    m = run.member_done(0, W, b, status, done, seconds, done * len(r.data.train), {"best_loss": best, "trials": done})
    log.info(f"{cfg.optimizer}: best training loss {loss_text(best)} after {done} trials; train acc {pct(train_acc)}, "
             f"val acc {pct(val_acc)}, test acc {pct(m['test_acc'])}")
    return run.finish([m], status, [(W, b)])
