"""lintorch.features.backbone: torchvision backbones end to end, head removal, and weights or input sizes that
cannot work, each one line."""
import pytest
import torch

from lintorch.errors import BackboneError
from lintorch.features import extract, make_extractor
from tests.features.conftest import images, refused


# --------------------------------------------------------------------------- torchvision backbones

@pytest.mark.parametrize("model,size,dim", [("mobilenet_v3_small", 64, 1024), ("resnet18", 32, 512)])
def test_torchvision_backbone_random_weights_end_to_end(tmp_path, model, size, dim):
    x = images(3, 32, seed=10)
    ex = make_extractor(f"torchvision:{model}", input_size=size)
    f = extract(ex, x, batch_size=2)
    assert f.shape == (3, dim) == (3, ex.dim) and torch.isfinite(f).all()
    assert torch.allclose(f, extract(make_extractor(f"torchvision:{model}", input_size=size), x), atol=1e-5)
    # the same weights from a file: same features, and the file's sha256 is recorded
    from torchvision.models import get_model
    torch.manual_seed(0)
    net = get_model(model, weights=None)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    exf = make_extractor(f"torchvision:{model}", input_size=size, weights=str(tmp_path / "w.pt"))
    assert torch.allclose(extract(exf, x), f, atol=1e-5)
    assert len(exf.state["weights"]["sha256"]) == 64 and exf.fingerprint() != ex.fingerprint()


# vit_b_16 takes only 224 px (about 2 s idle for 2 images): slow
@pytest.mark.parametrize("model,size", [pytest.param("vit_b_16", 224, marks=pytest.mark.slow), ("convnext_tiny", 64), ("efficientnet_b0", 64),
                                        ("densenet121", 64), ("regnet_y_400mf", 64), ("mobilenet_v3_small", 64)])
def test_torchvision_head_removal_across_families(model, size):
    """Each family's head (fc, classifier Linear or Sequential, heads.head) is removed: the features
    have the width of the input of the model's own last Linear (read from a fresh torchvision model)."""
    from torchvision.models import get_model
    net = get_model(model, weights=None)
    head = next(getattr(net, a) for a in ("fc", "classifier", "heads", "head") if hasattr(net, a))
    expected = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1].in_features
    f = extract(make_extractor(f"torchvision:{model}", input_size=size), images(2, 32, seed=11), batch_size=2)
    assert f.shape == (2, expected) and torch.isfinite(f).all()


def test_torchvision_named_weights_without_network_is_one_line_error(tmp_path, monkeypatch):
    from urllib.error import URLError
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))           # an empty hub cache

    def offline(*a, **k):
        raise URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    for model, weights, match in [("mobilenet_v3_small", "DEFAULT", "no network"),
                                  ("mobilenet_v3_small", "NOPE", "no weights"),
                                  ("not_a_model", None, "unknown torchvision model")]:
        with pytest.raises(BackboneError, match=match) as e:
            make_extractor(f"torchvision:{model}", weights=weights).fit(images(1, 32))
        assert "\n" not in str(e.value)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(BackboneError, match="not a readable torch file"):
        make_extractor("torchvision:resnet18", weights=str(tmp_path / "bad.pt")).fit(images(1, 32))


def test_a_torchvision_model_that_cannot_take_the_input_size_says_so():
    refused(make_extractor("torchvision:alexnet", input_size=16), 32, "torchvision:alexnet", "--input-size 16",
            error=BackboneError)


@pytest.mark.slow
def test_vit_at_another_input_size_says_so():
    refused(make_extractor("torchvision:vit_b_16", input_size=32), 32, "--input-size 32", "224", error=BackboneError)


class Opaque:
    pass


def test_backbone_weights_that_are_a_pickle_or_do_not_fit_are_one_plain_line(tmp_path):
    from lintorch.features.backbone import _load_weights
    import torchvision
    model = torchvision.models.get_model("resnet18", weights=None)
    torch.save({"model": Opaque()}, tmp_path / "pickle.pt")
    with pytest.raises(BackboneError) as e:
        _load_weights(model, "resnet18", str(tmp_path / "pickle.pt"))
    msg = str(e.value)
    assert "Python objects" in msg and "weights_only=False" not in msg and "\x1b" not in msg and "\n" not in msg
    sd = model.state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "other.pt")
    with pytest.raises(BackboneError) as e:
        _load_weights(model, "resnet18", str(tmp_path / "other.pt"))
    msg = str(e.value)
    for words in ("1 missing key(s) (e.g. fc.bias)", "1 unexpected key(s) (e.g. extra.weight)",
                  "1 of another shape (e.g. conv1.weight (3, 3) vs (64, 3, 7, 7))"):
        assert words in msg, msg
    good = torchvision.models.get_model("resnet18", weights=None).state_dict()
    torch.save(good, tmp_path / "good.pt")
    _load_weights(model, "resnet18", str(tmp_path / "good.pt"))
    assert torch.equal(model.conv1.weight, good["conv1.weight"])
