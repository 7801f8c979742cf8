"""TensorBoard logging for one member of a run: scalars, pictures, histograms, config, hparams.

One Monitor writes one TensorBoard run (one folder, one event file). Tags:
loss/data loss/reg loss/total acc/train acc/val loss/val lr norm/weight norm/grad update_ratio
time/epoch_seconds time/images_per_second; images templates, confusion_matrix (end);
histograms weight, grad; text config; hparams with final metrics in the same event file.
"""
import json

import torch


class Monitor:
    def __init__(self, logdir, purge_step=None):
        from torch.utils.tensorboard import SummaryWriter   # imported when a run starts, not at parse time
        self.writer = SummaryWriter(log_dir=logdir, purge_step=purge_step, flush_secs=30)

    def scalars(self, values, step):
        """values: {tag: number or 0-dim tensor}."""
        for tag, v in values.items():
            self.writer.add_scalar(tag, float(v), step)

    def epoch(self, step, weight=None, grad=None, templates=None):
        """Once per epoch: weight/gradient histograms and the templates picture when given; then
        flush so a watcher sees live curves."""
        for tag, t in (("weight", weight), ("grad", grad)):
            if t is not None:
                values = t.detach().float().cpu().flatten()
                values = values[values.abs() < 1e20]           # TensorBoard's buckets end at 1e20;
                if values.numel():                              # a diverged member has none
                    self.writer.add_histogram(tag, values, step)
        if templates is not None:
            self.writer.add_image("templates", templates, step)
        self.writer.flush()

    def image(self, tag, img, step):
        self.writer.add_image(tag, img, step)

    def config(self, config):
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def hparams(self, hparam_dict, metric_dict, step):
        """Hyperparameters and final metrics in this run's own event file: one row per run in the
        HPARAMS tab (SummaryWriter.add_hparams would write a separate sub-run instead)."""
        from torch.utils.tensorboard.summary import hparams
        clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparam_dict.items()}
        for summary in hparams(clean, metric_dict):
            self.writer.file_writer.add_summary(summary, step)
        for tag, v in metric_dict.items():
            self.writer.add_scalar(tag, v, step)

    def close(self):
        self.writer.flush()
        self.writer.close()


class NullMonitor:
    """A Monitor that writes nothing (a data-parallel rank > 0: rank 0 logs the same numbers)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def update_ratio(before, after):
    """||W_after - W_before|| / ||W_before||, per model: (C, D) -> (), (K, C, D) -> (K,). Healthy ~1e-3."""
    dims = (-2, -1)
    return torch.linalg.vector_norm(after - before, dim=dims) / torch.linalg.vector_norm(before, dim=dims).clamp_min(1e-12)
