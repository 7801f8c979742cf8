"""scikit-learn's estimator protocol without importing scikit-learn: keyword arguments stored as
given, get_params / set_params / clone-ability, a repr of what was set, the classifier tags."""
import functools
import inspect


@functools.lru_cache(maxsize=None)
def _init_parameters(cls):
    """cls.__init__'s keyword parameters {name: inspect.Parameter}, read once per class (a fit asks
    for them several times; inspect.signature costs about 0.1 ms each)."""
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


class Classifier:
    """A base for a scikit-learn-style classifier whose __init__ takes keyword arguments only and
    stores each under its own name."""

    _estimator_type = "classifier"           # scikit-learn < 1.6 reads this; newer ones the tags below

    def __sklearn_tags__(self):
        """A classifier, for scikit-learn's model selection (called by scikit-learn only, so the
        import is there when it runs; lintorch itself never imports scikit-learn)."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    @classmethod
    def _param_names(cls):
        return list(_init_parameters(cls))

    @classmethod
    def _defaults(cls):
        return {k: p.default for k, p in _init_parameters(cls).items()}

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; valid: "
                                 f"{', '.join(self._param_names())}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        given = {k: v for k, v in self.get_params().items()
                 if v is not _init_parameters(type(self))[k].default}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in given.items())})"
