"""TensorBoard logging for one member of a run: scalars, pictures, histograms, config, hparams.

One Monitor writes one TensorBoard run (one folder, one event file). Scalar tags, by x axis:
SGD steps (sgd, gd): loss/data loss/reg loss/total lr norm/weight norm/grad update_ratio, and at each
epoch's last step acc/train acc/val acc/val_best (best so far) loss/val time/epoch_seconds
time/images_per_second; epochs (1, 2, ...): epoch/train_acc epoch/val_acc epoch/val_best
epoch/train_loss; L-BFGS iterations, under their own tags so no chart mixes the two axes:
lbfgs/objective lbfgs/grad_max, and lbfgs/train_acc lbfgs/val_acc at the last one. Images templates,
confusion_matrix (end); histograms weight, grad; text config; hparams with final metrics (hparam/*).
A resumed run purges the events past its last saved step; an epoch's epoch/* points logged just
before a crash that lost its last.pt can appear twice.
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
                self.histogram(tag, t, step)
        if templates is not None:
            self.image("templates", templates, step)
        self.writer.flush()

    def histogram(self, tag, values, step):
        """values: any shape. TensorBoard's own buckets (add_histogram's), counted by torch.bucketize:
        ~15x faster than add_histogram's numpy path (bench/RESULTS.md, "Decisions in the code"). Values beyond the buckets (|v| >= 1e20) are left out;
        a diverged member may have none, and then nothing is written."""
        v = values.detach().flatten().cpu().double()
        v = v[v.abs() < 1e20]
        if not v.numel():
            return
        edges = self._edges()
        counts = torch.bincount((torch.bucketize(v, edges, right=True) - 1).clamp_(0, len(edges) - 2),
                                minlength=len(edges) - 1)                        # np.histogram's bins
        nonzero = counts.nonzero().flatten()
        start, end = int(nonzero[0]), int(nonzero[-1]) + 1
        # as make_histogram: right edges only, so one empty bucket left of the first one
        counts = torch.cat([counts.new_zeros(1), counts[:end]]) if start == 0 else counts[start - 1:end]
        self.writer.add_histogram_raw(tag, float(v.min()), float(v.max()), v.numel(), float(v.sum()),
                                      float(v.dot(v)), edges[start:end + 1].tolist(), counts.tolist(), step)

    def _edges(self):
        if getattr(self, "_bucket_edges", None) is None:
            self._bucket_edges = torch.tensor(self.writer.default_bins, dtype=torch.float64)
        return self._bucket_edges

    def image(self, tag, img, step):
        """img: uint8 (3, H, W). Encoded here at PNG compression level 1 (~3 ms for the templates
        picture, against ~30 ms through add_image's float rescaling and level-6 encoding)."""
        import io
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary
        hwc = img.permute(1, 2, 0).contiguous().numpy()
        buf = io.BytesIO()
        Image.fromarray(hwc).save(buf, format="PNG", compress_level=1)
        picture = Summary.Image(height=hwc.shape[0], width=hwc.shape[1], colorspace=3,
                                encoded_image_string=buf.getvalue())
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)

    def config(self, config):
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def hparams(self, summaries, metric_dict, step):
        """summaries: lintorch.output.hparams.summaries' protos; metric_dict: {tag: final value}. Both in
        this run's own event file: one row per run in the HPARAMS tab (SummaryWriter.add_hparams
        would write a separate sub-run instead)."""
        for summary in summaries:
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
