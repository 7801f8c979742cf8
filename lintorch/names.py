"""Every choice lintorch offers, its defaults and the rules that tie settings together, in one
place and torch-free: the train command's parser, the library and the checkpoint all read them
here, so a choice added once is known everywhere.
"""

LOSSES = ("softmax", "svm", "squared")   # squared: one-vs-rest least squares on +-1 targets
PENALTIES = ("l2", "l1", "elasticnet")
SVM_FORMS = ("weston-watkins", "crammer-singer", "one-vs-rest")
PROBABILISTIC = ("softmax",)                     # losses whose softmax(scores) are class probabilities
CLASS_WEIGHTS = ("none", "balanced")
# The loss settings' defaults: the flags' and Objective.from_config's for configs that lack a key.
LOSS_DEFAULTS = {"penalty": "l2", "beta": 1.0, "margin": 1.0, "squared_hinge": False, "svm_form": "weston-watkins",
                 "class_weight": "none"}
# The settings each loss has of its own (beyond reg, the penalty and class weights), by their flags' names: what a
# member's hparams log and LinearProbe passes on for it.
LOSS_SETTINGS = {"softmax": (), "svm": ("svm_form", "margin", "squared_hinge"), "squared": ()}

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

# Chosen with --sweep lr x reg (see README); gd takes 10x the minibatch lr and 100 full-batch steps.
TUNED = {"softmax": {"lr": 0.03, "reg": 3e-4}, "svm": {"lr": 0.003, "reg": 1e-3}, "squared": {"lr": 1e-3, "reg": 1e-4}}
GD_LR_SCALE, GD_EPOCHS, SGD_EPOCHS = 10.0, 100, 10
PIXEL_SQNORM = 189.0     # mean ||x||^2 of preprocessed CIFAR-10 training images, where TUNED was tuned


def features_lr_scale(D):
    """The default lr's factor for standardized features of dimension D (mean ||x||^2 = D): the
    step's curvature grows with ||x||^2, so the pixel-tuned lr is scaled by PIXEL_SQNORM / D (never
    up). k-means features (D 6,400, squared hinge, SGD, 10 epochs): the unscaled 3e-3 diverges in
    the first epoch; 9e-5 (scaled) 67.4%, 3e-4 68.7%."""
    return min(1.0, PIXEL_SQNORM / D)


def nonsmooth_parts(loss, squared, penalty):
    """The one smoothness rule L-BFGS needs: what makes this objective nonsmooth, in words ([] when
    it is smooth). The hinge has kinks (its square has none); so do l1 and elastic net."""
    return [what for what, bad in (("the hinge loss (use squared=True)", loss == "svm" and not squared),
                                   (f"the {penalty} penalty (use l2)", penalty != "l2")) if bad]


def exact_applies(loss, penalty, weighted):
    """The exact solver's one rule: the squared loss with the l2 penalty and no class weights
    (weighted False) is solved in closed form; every other objective is not."""
    return loss == "squared" and penalty == "l2" and not weighted


# the flags that configure one kind of extractor (argparse dest -> the --features part it configures):
# given with --features that has no such part they would be ignored, so they are usage errors
EXTRACTOR_FLAGS = {"centroids": "kmeans", "patches": "kmeans", "iterations": "kmeans", "pool": "kmeans",
                   "encoding": "kmeans", "alpha": "kmeans", "power": "kmeans", "zca_eps": "kmeans",
                   "backbone_weights": "torchvision:", "input_size": "torchvision:"}
