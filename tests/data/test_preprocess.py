"""lintorch.data.preprocess: the state dict round trip, and CPU-fitted statistics applied to CUDA batches."""
import torch

from lintorch.data import Preprocess, load_dataset


def test_preprocess_state_dict_round_trip():
    data = load_dataset("synthetic", image_size=8, val_size=100, seed=0)
    for mode, standardize in (("pixel", False), ("channel", True)):
        pre = Preprocess.fit(data.train.x, mode, standardize)
        again = Preprocess.from_state_dict(pre.state_dict())
        assert torch.equal(pre(data.val.x), again(data.val.x))
    feats = Preprocess.fit(data.train.x)(data.train.x)
    assert feats.shape == (len(data.train), 3 * 8 * 8)
    assert feats.mean(0).abs().max() < 1e-4  # the training mean image is subtracted


# --------------------------------------------------------------------------- the five crashes, by class

def test_preprocess_fitted_on_the_cpu_applies_to_cuda_batches(emulated):
    from lintorch.data import Preprocess
    x = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for pre in (Preprocess.fit(x), Preprocess.fit(x, mode="channel", standardize=True)):
        expected = pre(x)
        with emulated():
            out = pre(x.to("cuda"))
            assert out.device.type == "cuda"
            assert torch.equal(out.cpu(), expected)
