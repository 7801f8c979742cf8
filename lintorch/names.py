"""Every choice lintorch offers, its defaults and the rules that tie settings together, in one
place and torch-free: the train command's parser, the library and the checkpoint all read them
here, so a choice added once is known everywhere.
"""

# The losses, their settings, defaults and tuned lr/reg: objective.LOSSES, one class each.
PENALTIES = ("l2", "l1", "elasticnet")
SVM_FORMS = ("weston-watkins", "crammer-singer", "one-vs-rest")
CLASS_WEIGHTS = ("none", "balanced")

# data/sources.SOURCES' names, listed here for the torch-free parsers (a test holds the two equal)
IMAGE_DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "kmnist", "svhn", "stl10", "imagefolder", "synthetic")
DATASETS = (*IMAGE_DATASETS, "features")          # features: a folder of extracted features
LOADERS = ("tensor", "dataloader")
MEANS = ("pixel", "channel")
CACHE_CHECKS = ("stat", "full")

OPTIMIZERS = ("sgd", "gd", "lbfgs", "exact", "random-search", "random-local-search")
SEARCHES = ("random-search", "random-local-search")
FULL_BATCH = ("gd", "lbfgs", "exact")                        # one step per pass over the training split
SCHEDULES = ("constant", "step", "cosine")
PRECONDITIONS = ("auto", "gram", "none")
SWEEPABLE = ("lr", "reg")

# What --resume may change: where and how it runs, not what it trains.
RESUMABLE_CHANGES = ("epochs", "device", "threads", "quiet", "debug", "log_every", "sweep_parallel", "dist_timeout")

# gd takes 10x a loss's tuned minibatch lr (objective.LOSSES[name].tuned) and 100 full-batch steps.
GD_LR_SCALE, GD_EPOCHS, SGD_EPOCHS = 10.0, 100, 10
PIXEL_SQNORM = 189.0     # mean ||x||^2 of preprocessed CIFAR-10 training images, where the lrs were tuned


def features_lr_scale(D):
    """The default lr's factor for standardized features of dimension D (mean ||x||^2 = D): the
    step's curvature grows with ||x||^2, so the pixel-tuned lr is scaled by PIXEL_SQNORM / D (never
    up). k-means features (D 6,400, squared hinge, SGD, 10 epochs): the unscaled 3e-3 diverges in
    the first epoch; 9e-5 (scaled) 67.4%, 3e-4 68.7%."""
    return min(1.0, PIXEL_SQNORM / D)


def feature_parts(features):
    """--features text ("hog,colorhist") -> its parts, stripped, in order (torch-free)."""
    return [p.strip() for p in features.split(",") if p.strip()]


def repeated_parts(features):
    """The parts a --features text names more than once ("hog,hog" -> ["hog"]): each would add the
    same columns again (a duplicated feature, and a singular Gram for the exact solver)."""
    parts = feature_parts(features)
    return sorted({p for p in parts if parts.count(p) > 1})
