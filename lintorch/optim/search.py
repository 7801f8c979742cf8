"""The lecture's optimization strategies #1: random search and random local search.

Shapes: N examples, D features, C classes, T trials. Trials are scored in chunks of K stacked
models (one GEMM per data batch for K candidate W at once), on the full training loss.
"""
import torch

from .. import functional as LF


@torch.inference_mode()
def training_losses(weight, bias, loader, objective):
    """weight (K, C, D), bias (K, C) -> total loss L = data + reg * R(W) over all of loader, (K,)."""
    total, n = 0.0, 0
    for xb, yb in loader.batches(0):
        total = total + objective.data(LF.linear(xb, weight, bias), yb, reduction="sum")
        n += len(yb)
    return total / n + objective.regularization(weight)


@torch.inference_mode()
def random_search(loader, objective, *, num_classes, in_features, trials, device, seed=0, local=False,
                  scale=1e-3, step_size=1e-3, chunk=50, on_trial=None, should_stop=None):
    """Try `trials` weight matrices and keep the one with the lowest training loss.

    local=False: each W is drawn afresh, W = scale * randn (the lecture's strategy #1).
    local=True: each candidate is W_best + step_size * randn, kept only if it lowers the loss
    (cs231n's random local search); candidates are proposed `chunk` at a time.
    -> (weight (C, D), bias (C,), best loss, list of best-so-far losses per trial).
    on_trial(done, best_loss) reports progress; should_stop() ends the search after the chunk.
    """
    g = torch.Generator().manual_seed(seed)
    C, D = num_classes, in_features
    best_w = scale * torch.randn(C, D, generator=g)
    best_b = torch.zeros(C)
    best = float(training_losses(best_w[None].to(device), best_b[None].to(device), loader, objective)[0])
    history, done = [], 0
    while done < trials:
        k = min(chunk, trials - done)
        noise = torch.randn(k, C, D, generator=g)
        cand = best_w + step_size * noise if local else scale * noise
        losses = training_losses(cand.to(device), best_b.expand(k, C).to(device), loader, objective).cpu()
        for j in range(k):  # best-so-far after each trial, as the lecture prints it
            if losses[j] < best:
                best, best_w = float(losses[j]), cand[j].clone()
            history.append(best)
        done += k
        if on_trial is not None:
            on_trial(done, best)
        if should_stop is not None and should_stop():
            break
    return best_w, best_b, best, history
