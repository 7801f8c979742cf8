"""A cheap checksum of tensors' bytes, stored beside what a cache writes and checked whenever it is
read back: a cache file of the right shape and dtype but other values (zeroed, edited, partly
overwritten) is never served. CRC-32 over the bytes: any change of up to 32 bits and any burst
is caught, other changes but for 1 in 4e9. It guards against corruption and edits, not against a
file crafted to match (it is no cryptographic hash). CRC-32 is the cheapest of those measured
(~0.5x the torch.load it guards; bench/RESULTS.md, "Decisions in the code").
"""
import zlib

import torch


def checksum(obj):
    """A tensor, or plain data holding tensors (dicts, lists, tuples, numbers, strings) -> "crc32:<hex>"
    over every tensor's dtype, shape and bytes (CPU tensors: no copy) and every other value's repr."""
    return f"crc32:{_crc(obj, 0):08x}"


def _crc(obj, crc):
    if isinstance(obj, torch.Tensor):
        crc = zlib.crc32(f"tensor {obj.dtype} {tuple(obj.shape)};".encode(), crc)
        data = obj.detach().cpu().contiguous().reshape(-1)
        return zlib.crc32(data.view(torch.uint8).numpy().data, crc) if data.numel() else crc
    if isinstance(obj, dict):
        crc = zlib.crc32(f"dict {len(obj)};".encode(), crc)
        for k in sorted(obj, key=repr):
            crc = _crc(obj[k], zlib.crc32(f"{k!r}:".encode(), crc))
        return crc
    if isinstance(obj, (list, tuple)):
        crc = zlib.crc32(f"{type(obj).__name__} {len(obj)};".encode(), crc)
        for v in obj:
            crc = _crc(v, crc)
        return crc
    return zlib.crc32(f"{obj!r};".encode(), crc)


class RunningChecksum:
    """The CRC-32 of tensors' bytes fed in order, chunk by chunk (a file written or read in pieces):
    the same value however the bytes are cut. value() -> "crc32:<hex>"."""

    def __init__(self):
        self.crc = 0

    def update(self, chunk):
        """chunk: a CPU tensor or NumPy array; its bytes in C order."""
        import numpy as np
        a = chunk.detach().contiguous().numpy() if isinstance(chunk, torch.Tensor) else np.ascontiguousarray(chunk)
        if a.size:
            self.crc = zlib.crc32(a.reshape(-1).view(np.uint8).data, self.crc)
        return self

    def value(self):
        return f"crc32:{self.crc:08x}"
