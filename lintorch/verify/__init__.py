"""Gradient verification: the independent references, lintorch's checks, check_function."""
