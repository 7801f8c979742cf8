"""Settings shared by the tests of lintorch.training."""
import socket


# a small synthetic problem: 4,000 images of 8 x 8 (D 192), 16 steps an epoch
CUDA_RUN = ["--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--quiet", "--threads", 1,
            "--device", "cuda", "--val-size", 500]


def one_rank(monkeypatch):
    """torchrun's variables for a job of one process on a free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
