"""Reporting as hooks: what a fit tells its caller as it goes. The core (training.fit and its
drivers) calls a Reporter at each event and never touches a file itself. Reporter writes nothing
(a fit in memory); the train command installs run_folder(folder): Checkpoints (checkpoint.pt,
last.pt), TensorBoard (each member's events and the pictures) and Summary (config.json,
metrics.json, the ranked ending), one after another (Reporters).

Shapes: D features, C classes, K members; a member's weights are one slice (C, D) of (K, C, D).
"""
import logging
import os
import time

from ..cli import one_line
from ..errors import UserError
from ..output.atomic import copy_atomic
from ..output.checkpoint import BEST, LAST, Header, ModelFile, NullSaver, Saver, TrainState, model_dict, resume_dict
from ..output.rundir import write_json
from .members import duration, pct, ranking

log = logging.getLogger("lintorch")


class Reporter:
    """The hooks a fit calls (skorch's notify, Lightning's callbacks), each a no-op here: a fit in
    memory writes nothing, draws nothing and logs no ending. k: a member's index in run.members."""

    def on_start(self, run, resumed=None):
        """The run is built (recipe, members); resumed: the TrainState it continues, or None."""

    def on_scalars(self, run, k, values, step):
        """Member k's numbers at step: {tag: number or 0-dim tensor}."""

    def on_epoch(self, run, k, epoch, step, weight, grad):
        """Member k after epoch (0-based) was validated: its weights (C, D), the epoch's gradient (C, D) or None."""

    def on_best(self, run, k, weight, bias, epoch, sweep=False):
        """Member k's new best model, weight (C, D), bias (C,); sweep: also the best of the whole sweep so far."""

    def on_progress(self, trainer, epoch, step, stats, interrupted=False):
        """The point to resume from: epoch and step reached, the partial epoch's stats (or None)."""

    def on_member_done(self, run, k, metrics, weight, bias, step, test):
        """Member k has finished: its metrics (Member.finish), kept weights, its test evaluation (or None)."""

    def on_path_done(self, run, results, status, names, best):
        """Every member has finished; best: the kept member's index in results (None: all diverged)."""

    def on_failed(self, run, error):
        """Training stopped on an error it cannot get past; the caller reports the error itself."""

    def flush(self):
        """Wait for what is being written; re-raise a write's failure."""

    def drain(self):
        """flush() for a run stopping on another error: a write's own failure only logged."""


class Reporters(Reporter):
    """Several reporters, each told of every event in turn."""

    def __init__(self, *reporters):
        self.reporters = reporters

    def on_start(self, run, resumed=None):
        for r in self.reporters:
            r.on_start(run, resumed)

    def on_scalars(self, run, k, values, step):
        for r in self.reporters:
            r.on_scalars(run, k, values, step)

    def on_epoch(self, run, k, epoch, step, weight, grad):
        for r in self.reporters:
            r.on_epoch(run, k, epoch, step, weight, grad)

    def on_best(self, run, k, weight, bias, epoch, sweep=False):
        for r in self.reporters:
            r.on_best(run, k, weight, bias, epoch, sweep)

    def on_progress(self, trainer, epoch, step, stats, interrupted=False):
        for r in self.reporters:
            r.on_progress(trainer, epoch, step, stats, interrupted)

    def on_member_done(self, run, k, metrics, weight, bias, step, test):
        for r in self.reporters:
            r.on_member_done(run, k, metrics, weight, bias, step, test)

    def on_path_done(self, run, results, status, names, best):
        for r in self.reporters:
            r.on_path_done(run, results, status, names, best)

    def on_failed(self, run, error):
        for r in self.reporters:
            r.on_failed(run, error)

    def flush(self):
        for r in self.reporters:
            r.flush()

    def drain(self):
        for r in self.reporters:
            r.drain()


def run_folder(folder, dist=None):
    """The train command's reporting into folder (LinearProbe's with a logdir too). dist: the
    torchrun place (distributed hook; a data-parallel rank > 0 writes nothing)."""
    return Reporters(Checkpoints(folder, dist), TensorBoard(folder, dist), Summary(folder, dist))


class _InFolder(Reporter):
    """A reporter writing into a run folder: a single run at the folder, a sweep's members in
    sub-folders named after them."""

    def __init__(self, folder, dist=None):
        self.folder, self.dist = folder, dist
        self.writes = dist is None or dist.writes_run     # a data-parallel rank > 0 writes nothing
        self.main = dist is None or dist.main             # the rank that writes the run's own files

    def member_folder(self, run, k):
        single = len(run.members) == 1 and not run.cfg.sweep
        return self.folder if single else os.path.join(self.folder, run.members[k].name)


class Checkpoints(_InFolder):
    """checkpoint.pt: each member's best model (and a sweep's best at the run folder, as it goes);
    last.pt: where to resume, written in the background (Saver)."""

    def __init__(self, folder, dist=None):
        super().__init__(folder, dist)
        self.saver = Saver() if self.writes else NullSaver()
        self.header = None

    def on_start(self, run, resumed=None):
        cfg, recipe = run.cfg, run.recipe
        self.header = Header(list(recipe.classes), cfg.image_size, recipe.in_features, cfg.loss,
                             recipe.preprocess.state_dict(), cfg.saved(run.resolved), recipe.features_header(cfg))

    def on_best(self, run, k, weight, bias, epoch, sweep=False):
        m = run.members[k]
        h = Header(**{**vars(self.header), "config": m.saved_config()})
        file = ModelFile(h, weight, bias, epoch, m.best_val, m.best_epoch, m.history)
        self.saver.save(model_dict(file), os.path.join(self.folder if sweep else self.member_folder(run, k), BEST))

    def on_progress(self, trainer, epoch, step, stats, interrupted=False):
        model = trainer.r.model
        state = TrainState(model.weight, model.bias, trainer.opt.state_dict(), trainer.best_w, trainer.best_b,
                           epoch, step, [m.state() for m in trainer.members],
                           None if stats is None else stats.state_dict())
        state = trainer.group.gather_state(state)     # config-parallel: all members on rank 0, None elsewhere
        if state is not None:
            self.saver.save(resume_dict(self.header, state), os.path.join(self.folder, LAST))
        if interrupted:
            log.info(f"interrupted at epoch {epoch + 1}, step {step}: saved last.pt "
                     f"(continue with --resume {self.folder})")

    def on_path_done(self, run, results, status, names, best):
        """A sweep's checkpoint.pt: an atomic copy of the best member's."""
        if len(results) > 1 and best is not None:
            copy_atomic(os.path.join(self.folder, names[best], BEST), os.path.join(self.folder, BEST))

    def flush(self):
        self.saver.flush()

    def drain(self):
        self.saver.drain()


class TensorBoard(_InFolder):
    """Each member's TensorBoard run (scalars, histograms, pictures, config, hparams) and the
    pictures beside them: templates.png, centroids.png, path.png."""

    # Epochs between weight/grad histograms and template pictures (the first and last always have them):
    # every 3rd keeps the per-epoch bookkeeping near a tenth of a loop epoch (bench/README.md, "Per-epoch bookkeeping")
    picture_every = 3

    def __init__(self, folder, dist=None):
        super().__init__(folder, dist)
        self.monitors = []

    def on_start(self, run, resumed=None):
        from ..output.monitor import Monitor, NullMonitor
        purge = None if resumed is None else resumed.epoch * len(run.recipe.train_loader) + resumed.step + 1
        for k, m in enumerate(run.members):
            folder = self.member_folder(run, k)
            if self.writes:
                os.makedirs(folder, exist_ok=True)
            mon = Monitor(folder, purge_step=purge) if self.writes else NullMonitor()
            if purge is None:
                mon.config(m.saved_config())
            self.monitors.append(mon)
        if resumed is None and self.main:
            self.show_centroids(run)

    def on_scalars(self, run, k, values, step):
        self.monitors[k].scalars(values, step)

    def on_epoch(self, run, k, epoch, step, weight, grad):
        images = epoch % self.picture_every == 0 or epoch + 1 == run.cfg.epochs
        self.monitors[k].epoch(step, weight if images else None, grad if images else None,
                               self.templates(run, weight) if images else None)

    def on_member_done(self, run, k, metrics, weight, bias, step, test):
        """The member's confusion matrix (test, else val), templates and hparams."""
        m, mon, recipe = run.members[k], self.monitors[k], run.recipe
        if m.best_val is not None:
            from ..model import LinearClassifier
            from ..output.rundir import write_png
            from ..output.visualize import confusion_image, template_grid
            from .epoch import evaluate
            shown = test or evaluate(LinearClassifier.from_weights(weight, bias), recipe.val_loader,
                                     num_classes=len(recipe.classes))
            picture = confusion_image(shown["confusion"], recipe.classes)
            mon.image(f"confusion_matrix/{'test' if test else 'val'}", picture, step)
            if recipe.image_shape is not None:   # weights are pictures over raw pixels
                write_png(template_grid(weight, recipe.classes, recipe.image_shape),
                          os.path.join(self.member_folder(run, k), "templates.png"))
            final = {f"hparam/{key}": metrics[key] for key in ("val_acc", "train_acc", "test_acc", "best_epoch")
                     if metrics[key] is not None}
            mon.hparams(self.hparam_summaries(run, k, metrics["status"]), final, step)
        mon.close()

    def hparam_summaries(self, run, k, status):
        """The HPARAMS tab's row: member k's distinguishing settings under its own trial ID."""
        from ..output.hparams import member_hparams, summaries, trial_id
        m = run.members[k]
        resolved = {"lr": m.resolved.lr, "val_size": m.resolved.val_size}     # what it trained with
        values = member_hparams({**m.config.saved(), **resolved}, tuple(m.overrides), run.recipe.extractor,
                                run.recipe.in_features)
        trial = trial_id(m.name, self.folder, not m.config.sweep, m.index, m.count)
        return summaries(values, tuple(m.overrides), trial, m.started, status)

    def on_path_done(self, run, results, status, names, best):
        if run.cfg.sweep and best is not None:
            self.path_picture(run, results, best)

    def path_picture(self, run, results, best):
        """A sweep over one numeric setting: path.png in the run folder and the image "path" in a
        TensorBoard run at the run folder: validation accuracy and the training objective (the
        solver's, else the last epoch's training loss) against the swept value, the best marked."""
        from ..output.monitor import Monitor
        from ..output.rundir import write_png
        from ..output.visualize import path_image
        configs = [r.get("config") or {} for r in results]
        swept = sorted({k for c in configs for k in c if len({repr(x.get(k)) for x in configs}) > 1})
        if len(run.members) != len(results) or len(swept) != 1 or \
                not all(isinstance(c.get(swept[0]), (int, float)) for c in configs):
            log.debug("path.png: drawn for a sweep of one numeric setting only")
            return
        key = swept[0]
        order = sorted(range(len(results)), key=lambda k: configs[k][key])
        objective = [results[k].get("objective") if results[k].get("objective") is not None else
                     (results[k]["history"][-1]["train_loss"] if results[k].get("history") else None) for k in order]
        img = path_image([configs[k][key] for k in order], [results[k]["val_acc"] for k in order],
                         objective, order.index(best), key)
        try:
            write_png(img, os.path.join(self.folder, "path.png"))
            mon = Monitor(self.folder)
            mon.image("path", img, 0)
            mon.close()
        except (OSError, UserError) as e:
            log.warning(f"path.png not written ({one_line(e)})")

    def on_failed(self, run, error):
        """Each member's TensorBoard run flushed, as far as the disk allows."""
        for mon in self.monitors:
            try:
                mon.close()
            except Exception:
                pass

    def templates(self, run, weight):
        """The class templates picture, where weights are pictures (raw pixels), else None."""
        from ..output.visualize import template_grid
        shape = run.recipe.image_shape
        return None if shape is None else template_grid(weight, run.recipe.classes, shape)

    def show_centroids(self, run):
        """Each k-means part's centroids in centroids.png and TensorBoard, once per run (a sweep's
        at the run folder, not once per member)."""
        from ..output.monitor import Monitor
        from ..output.rundir import write_png
        extractor = run.recipe.extractor
        for part in getattr(extractor, "parts", [extractor]):
            if getattr(part, "NAME", "") == "kmeans" and "centroids" in getattr(part, "state", {}):
                from ..features.kmeans import centroid_picture
                grid = centroid_picture(part.state, part.settings.get("rf", 6))
                write_png(grid, os.path.join(self.folder, "centroids.png"))
                if len(run.members) == 1:              # a single run's events are at the run folder
                    self.monitors[0].image("centroids", grid, 0)
                    continue
                mon = Monitor(self.folder)
                mon.image("centroids", grid, 0)
                mon.close()


class Summary(_InFolder):
    """config.json, each member's metrics.json, and the run's ending: the answer in words (a sweep's
    ranked table and its summary metrics.json)."""

    def on_start(self, run, resumed=None):
        if resumed is None and self.main:
            write_json(os.path.join(self.folder, "config.json"), run.cfg.saved(run.resolved))

    def on_member_done(self, run, k, metrics, weight, bias, step, test):
        write_json(os.path.join(self.member_folder(run, k), "metrics.json"), metrics)

    def on_path_done(self, run, results, status, names, best):
        """One line for a single run; the ranked table and summary metrics.json for a sweep. Either
        way the run ends on the answer: the kept model's validation (and test) accuracy, where its
        checkpoint is, and the total time. status: how the run ended ("completed" or "interrupted"),
        whatever its members did. names: all members' names (config-parallel: every rank's)."""
        total = duration(time.perf_counter() - run.started)
        checkpoint = os.path.join(self.folder, BEST)
        if not run.cfg.sweep:
            m = results[0]
            if m["val_acc"] is not None:
                test = "" if m["test_acc"] is None else f", test acc {pct(m['test_acc'])}"
                log.info(f"done ({m['status']}): best val acc {pct(m['val_acc'])} at epoch {m['best_epoch']}{test}; "
                         f"{m['seconds']:.1f}s training, {total} in all; checkpoint {checkpoint}")
            return
        order = ranking([r["val_acc"] for r in results])
        w = max(len(n) for n in names)
        lines = [f"{'rank':>4}  {'configuration':<{w}} {'val acc':>8}  status"]
        for r, k in enumerate(order, 1):
            lines.append(f"{r:>4}  {names[k]:<{w}} {pct(results[k]['val_acc']):>8}  {results[k]['status']}")
        log.info("sweep results (best first):\n" + "\n".join(lines))
        best = results[order[0]]
        if status != "interrupted":
            status = "diverged" if all(r["status"] == "diverged" for r in results) else "completed"
        write_json(os.path.join(self.folder, "metrics.json"), {"status": status, "best": best, "configs": results})
        if best["val_acc"] is None:
            log.error(f"error: every configuration diverged; no model was kept ({self.folder})")
            return
        test = "" if best["test_acc"] is None else f", test acc {pct(best['test_acc'])}"
        log.info(f"best configuration {names[order[0]]} of {len(results)}: val acc {pct(best['val_acc'])}{test}\n"
                 f"checkpoint {checkpoint}\n"
                 f"done ({status}) in {total}")

    def on_failed(self, run, error):
        """metrics.json says the run failed, as far as the disk allows."""
        try:
            write_json(os.path.join(self.folder, "metrics.json"), {
                "status": "failed", "error": one_line(error),
                "configs": [{"name": m.name, "status": m.status, "val_acc": m.best_val, "best_epoch": m.best_epoch,
                             "epochs": len(m.history)} for m in run.members]})
        except (OSError, UserError):
            pass
