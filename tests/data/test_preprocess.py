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


def test_feature_standardization_is_the_float64_mean_and_std_of_the_chunks():
    """fit_features streams row chunks: float64 sums of x and x^2 (an independent float64 reference
    here), the same answer whether the split comes whole or in chunks; .to() its own device is itself."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 7, generator=g) * 3 + torch.arange(7.0)
    pre = Preprocess.fit_features([x])
    xd = x.double()
    std = (xd.var(0, unbiased=False) + 1e-6).sqrt()
    torch.testing.assert_close(pre.mean.double(), xd.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(pre.std.double(), std, rtol=1e-6, atol=0)
    chunked = Preprocess.fit_features([x[:100], x[100:]])
    torch.testing.assert_close(chunked.mean, pre.mean)
    torch.testing.assert_close(chunked.std, pre.std)
    assert pre.to("cpu") is pre and pre.to(torch.device("cpu")) is pre


def test_features_as_given_pass_through_to_the_bit():
    """A zero-mean, std-less feature Preprocess (LinearProbe's standardize=False) skips its arithmetic:
    the same float32 values x * 1 + 0 gave, float32 batches as they are (a view), others converted."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 5, generator=g) * 1e3, torch.tensor([[0.0, -0.0, 1e-40, -3.5, 7.0]])])
    pre = Preprocess(torch.zeros(5), None, "feature")
    assert pre.passes_through and not Preprocess(torch.ones(5), None, "feature").passes_through
    out = pre(x)
    assert torch.equal(out, torch.addcmul(pre.neg_shift, x, pre.scale)) and out.data_ptr() == x.data_ptr()
    assert torch.equal(pre(x.double()), torch.addcmul(pre.neg_shift, x.double().float(), pre.scale))
    assert not Preprocess.fit_features([x]).passes_through and not Preprocess.fit(torch.zeros(2, 3, 2, 2,
                                                                               dtype=torch.uint8)).passes_through
