"""The tests' CUDA emulation (tests/emulated_cuda.py) itself: it must raise where CUDA raises and count
the host syncs a GPU would make, or every [cuda] variant passing on a CPU machine proves nothing."""
import pytest
import torch


def test_a_cpu_tensor_meeting_a_cuda_one_raises_torchs_error(emulated):
    with emulated():
        x = torch.ones(3, device="cuda")
        assert x.device == torch.device("cuda", 0) and x.is_cuda
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            x + torch.ones(3)
        assert torch.equal((x + torch.tensor(2.0)).cpu(), torch.full((3,), 3.0))     # a 0-dim CPU tensor is allowed
        assert (x[torch.tensor([0, 2])]).device.type == "cuda"                      # CPU indices too


def test_numpy_of_cuda_and_cpu_generators_on_cuda_raise(emulated):
    with emulated():
        with pytest.raises(TypeError, match="can't convert cuda"):
            torch.zeros(2, device="cuda").numpy()
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(2, device="cuda", generator=torch.Generator().manual_seed(0))
        assert torch.randn(2, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)).is_cuda


def test_a_custom_function_returning_a_gradient_on_the_wrong_device_raises(emulated):
    class Leaky(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.cpu() * 2
    with emulated():
        x = torch.ones(3, device="cuda", requires_grad=True)
        with pytest.raises(RuntimeError, match="expected device cuda"):
            Leaky.apply(x).sum().backward()


def test_host_syncs_are_counted_where_asked(emulated):
    with emulated() as mode:
        x = torch.arange(6.0, device="cuda")
        assert mode.total() == 0
        x.sum().item()
        x.cpu()
        bool(x.any())
        x[x > 2]
        torch.ones(2).to("cuda")                                                 # blocking H2D
        torch.ones(2).pin_memory().to("cuda", non_blocking=True)                # not a sync
        kinds = sorted(kind for kind, _ in mode.syncs)
    assert kinds == ["D2H copy", "H2D copy, blocking", "__bool__", "boolean-mask indexing (nonzero)", "item"]
    assert all(where.startswith("test_emulated_cuda.py:") for _, where in mode.syncs)
    assert not torch.cuda.is_available()                                     # the patches undone after the block


def test_sums_by_atomics_are_recorded_on_cuda_only(emulated):
    """CUDA's index_add_ / scatter_add_ / index_put_(accumulate=True) add in an order that varies run to run."""
    with emulated() as mode:
        for device in ("cpu", "cuda"):
            x, i = torch.zeros(3, device=device), torch.tensor([0, 2, 0], device=device)
            x.index_add_(0, i, torch.ones(3, device=device))
            x.scatter_add_(0, i, torch.ones(3, device=device))
            x.index_put_((i,), torch.ones(3, device=device), accumulate=True)
            x.index_put_((i,), torch.ones(3, device=device))                       # a plain write
    assert sorted(op for op, _ in mode.atomics) == ["index_add_", "index_put_", "scatter_add_"], mode.atomics
