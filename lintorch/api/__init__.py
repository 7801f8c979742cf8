"""The Python API's parts below lintorch.LinearProbe: scikit-learn's estimator protocol
(estimator), its keywords' rules and words (keywords), its model and checkpoint (files)."""
