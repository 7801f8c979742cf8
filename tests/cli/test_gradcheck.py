"""`python -m lintorch.gradcheck`: the command prints its table and exits 0, and answers a missing
CUDA in one line; each in a process of its own forked with torch imported (tests/forked.py: its start,
parsing before torch, is not what these test)."""
import pytest
import torch

from tests import forked


def test_cli_exits_0_and_prints_its_table():
    """On one thread: the checks' small tensors spent ~40% more CPU on two threads here."""
    p = forked.start("lintorch.gradcheck", "--seed", "0", threads=1)
    code, (out, err) = p.wait(), p.communicate()
    assert code == 0, out + err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["function", "method", "dtype/device"]
    assert "FAIL" not in out and " 0 failed" in lines[-1]
    body = lines[1:-1]
    assert len(body) == int(lines[-1].split()[0]) > 50
    assert all(line.split()[-1].startswith(("pass", "kinks=")) for line in body)
    assert any("kinks=2" in line for line in body)              # the on-kinks case: 2 scores move its 0 margin


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cli_cuda_without_cuda_is_a_one_line_error():
    p = forked.start("lintorch.gradcheck", "--device", "cuda")
    code, (out, err) = p.wait(), p.communicate()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "CUDA" in err
