"""A fitted linear probe's predictions: scores = W x' + b on the standardized features x', as
decision_function, predict, predict_proba and score, for tensors, arrays, examples shaped as in
training and DataLoaders (data.inputs.FeatureBlocks checks them as fit checks its X); save.

Shapes: N examples, D features, C classes.
"""
import numpy as np

from ..data.inputs import FeatureBlocks, as_labels, label_kind
from .files import save_probe


class NotFittedError(ValueError, AttributeError):
    """predict & co. before fit (scikit-learn's NotFittedError is both too)."""


class Predictor:
    """The predict side of a fitted probe, which holds _W (C, D), _b (C,), _preprocess, _cfg,
    _sample_shape, classes_ (C,) and n_features_in_ (files.set_model sets them)."""

    def _check_fitted(self):
        if not hasattr(self, "_W"):
            raise NotFittedError("this LinearProbe is not fitted yet: call fit(X, y) first")

    def _scores(self, X):
        """X (see data.inputs.FeatureBlocks) -> (scores (N, C) float32 on the model's device, the
        labels a DataLoader yielded or None)."""
        import torch
        self._check_fitted()
        blocks = FeatureBlocks(X, self._sample_shape, self.n_features_in_)
        with torch.inference_mode():
            scores = [torch.addmm(self._b, self._preprocess(xb.to(self._W.device)), self._W.t()) for xb in blocks]
        if not scores:
            raise ValueError("X holds no examples")
        return torch.cat(scores), blocks.labels

    def decision_function(self, X):
        """X (N, D) -> scores: (N, C), or (N,) for two classes (classes_[1]'s score minus
        classes_[0]'s: > 0 predicts classes_[1], scikit-learn's convention, which its binary scorers
        such as roc_auc read). A torch tensor for a torch X (on the model's device), else a NumPy
        array (scikit-learn's type)."""
        import torch
        scores, _ = self._scores(X)
        if scores.shape[1] == 2:
            scores = scores[:, 1] - scores[:, 0]
        return scores if isinstance(X, torch.Tensor) else scores.cpu().numpy()

    def predict(self, X):
        """X (N, D) (or a DataLoader of x or (x, y) batches) -> (N,) labels as classes_ holds them
        (a NumPy array: labels may be strings)."""
        scores, _ = self._scores(X)
        return self.classes_[scores.argmax(1).cpu().numpy()]

    def predict_proba(self, X):
        """X (N, D) -> (N, C) softmax probabilities (loss="softmax" only) as a NumPy array, columns in
        classes_'s order."""
        self._check_fitted()
        from ..objective import LOSSES
        if not LOSSES[self._cfg["loss"]].probabilistic:
            raise AttributeError(f"predict_proba needs loss='softmax' (this probe was fitted with loss="
                                 f"{self._cfg['loss']!r}, whose scores are not probabilities); use decision_function")
        scores, _ = self._scores(X)
        return scores.softmax(1).cpu().numpy()

    def score(self, X, y=None):
        """Accuracy of predict(X) against y (N,) labels of the kind classes_ holds; X may be a
        DataLoader of (x, y) batches (y=None). ValueError for y of another shape, length or kind."""
        scores, loader_labels = self._scores(X)
        if loader_labels is not None:
            if y is not None:
                raise ValueError("y: a DataLoader yields its own labels; pass y=None")
            y = loader_labels
        elif y is None:
            raise TypeError("score needs y, the labels of X's rows (or a DataLoader of (x, y) batches)")
        y = as_labels(y, len(scores), "y")
        if label_kind(y) != label_kind(self.classes_, "classes_"):
            raise ValueError(f"y holds {label_kind(y)}s, this probe's classes_ are {label_kind(self.classes_)}s "
                             f"({y[:3].tolist()} against {self.classes_[:3].tolist()})")
        return float(np.mean(self.classes_[scores.argmax(1).cpu().numpy()] == y))

    def save(self, path):
        """A lintorch checkpoint (torch.load(path, weights_only=True) reads it; evaluate and
        lintorch.load too)."""
        self._check_fitted()
        save_probe(self, path)
