"""training.report: the core tells a Reporter of each event, in order, and a reporter sees what
fit returns; run_folder is the train command's reporting (each hook writes only in its folder)."""
import pytest
import torch

from lintorch.config import TrainConfig
from lintorch.data import DataSet, Split
from lintorch.training.fit import fit
from lintorch.training.report import Reporter, Reporters


def blobs(n=300, d=12, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    return torch.randn(c, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g), y


class Events(Reporter):
    """Each hook call, by name and member."""

    def __init__(self):
        self.seen = []

    def on_start(self, run, resumed=None):
        self.seen.append(("start", len(run.members), resumed))

    def on_best(self, run, k, weight, bias, epoch, sweep=False):
        self.seen.append(("best", k, epoch, sweep))

    def on_progress(self, trainer, epoch, step, stats, interrupted=False):
        self.seen.append(("progress", epoch, step))

    def on_member_done(self, run, k, metrics, weight, bias, step, test):
        self.seen.append(("member", k, metrics["val_acc"], weight.clone()))

    def on_path_done(self, run, results, status, names, best):
        self.seen.append(("path", best, status, list(names)))


def fit_with(reporter, **settings):
    x, y = blobs()
    data = DataSet(Split(x[:240], y[:240]), Split(x[240:], y[240:]), None, ["a", "b", "c"], None, None)
    cfg = TrainConfig(dataset="tensor", data_dir=None, quiet=True, **settings).filled()
    cfg.check()
    return fit(cfg, data, device=torch.device("cpu"), report=reporter)


@pytest.mark.parametrize("settings", [
    dict(loss="squared", optimizer="exact", sweep=({"reg": 1e-4}, {"reg": 10.0})),
    dict(loss="softmax", optimizer="sgd", epochs=3, sweep=({"lr": 0.01}, {"lr": 0.1}))], ids=["exact", "sgd"])
def test_the_core_tells_each_event_in_order_and_the_reporter_sees_what_fit_returns(settings):
    events = Events()
    res = fit_with(Reporters(events), **settings)
    names = [e[0] for e in events.seen]
    assert names[0] == "start" and events.seen[0][1] == 2 and events.seen[0][2] is None
    assert names[-1] == "path" and names.count("path") == 1
    done = [e for e in events.seen if e[0] == "member"]
    assert [e[1] for e in done] == [0, 1]
    for k in range(2):        # a member's last new best comes before it is done
        last_best = max(i for i, e in enumerate(events.seen) if e[:2] == ("best", k))
        assert last_best < next(i for i, e in enumerate(events.seen) if e[:2] == ("member", k))
    assert [e[2] for e in done] == res.val_acc                       # the numbers fit returns
    for k in range(2):
        assert torch.equal(done[k][3], res.W[k])                      # the kept weights, as fit returns them
    assert events.seen[-1][1] == res.best and events.seen[-1][2] == "completed" and events.seen[-1][3] == res.names
    epochs = settings.get("epochs", 1)
    if settings["optimizer"] == "sgd":    # a resume point after every epoch; a new best marked per member
        assert [e[1:] for e in events.seen if e[0] == "progress"] == [(e, 0) for e in range(1, epochs + 1)]
    else:                                 # a one-shot solver keeps each member's one model
        assert [e[1:3] for e in events.seen if e[0] == "best"] == [(0, 1), (1, 1)]


def test_a_reporter_does_not_change_the_result():
    settings = dict(loss="softmax", optimizer="sgd", epochs=2, sweep=({"lr": 0.01}, {"lr": 0.1}))
    plain, told = fit_with(None, **settings), fit_with(Events(), **settings)
    assert torch.equal(plain.W, told.W) and torch.equal(plain.b, told.b) and plain.val_acc == told.val_acc


def test_run_folder_writes_the_train_commands_files(tmp_path):
    from lintorch.training.report import run_folder
    res = fit_with(run_folder(str(tmp_path)), loss="squared", optimizer="exact",
                   sweep=({"reg": 1e-4}, {"reg": 10.0}))
    top = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "metrics.json", "checkpoint.pt", "path.png", *res.names} <= top and len(res.names) == 2
    for member in res.names:                                   # a sweep's members in sub-folders named after them
        assert {"checkpoint.pt", "metrics.json"} <= {p.name for p in (tmp_path / member).iterdir()}
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert torch.equal(kept["model"]["weight"], res.W[res.best]) and torch.equal(kept["model"]["bias"], res.b[res.best])
