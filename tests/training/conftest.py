"""Settings shared by the tests of lintorch.training."""


# a small synthetic problem: 4,000 images of 8 x 8 (D 192), 16 steps an epoch
CUDA_RUN = ["--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--quiet", "--threads", 1,
            "--device", "cuda", "--val-size", 500]
