"""Optimizers: SGD with momentum, L-BFGS, random search, the exact least-squares path."""
