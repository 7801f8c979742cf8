"""Each extractor's settings that a command line sets, declared once: the extractor's name for it,
its flag, type, default, bounds and help. Torch-free, so the commands' parsers are built before
torch loads. Everything else derives from these declarations: the extractors' DEFAULTS, the train
and extract commands' flags (config.TrainConfig, extract), the usage error for a flag no --features
part reads (cli.unused_extractor_flags), the settings a run passes (data.featurize.extractor_settings)
and the HPARAMS columns (output.hparams). The cache keys follow: an extractor's fingerprint hashes
its settings.
"""
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Setting:
    """key: the extractor's settings key ("k"); flag: the command line's dest ("centroids", the
    flag --centroids); kind: int, float or str; default: the extractor's; help: the flag's text,
    "{default}" standing for the default; low/high/low_open: the bounds; choices; metavar."""
    key: str
    flag: str
    kind: type
    default: object
    help: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: Optional[Tuple[str, ...]] = None
    metavar: Optional[str] = None

    def help_text(self, owner):
        """The flag's help, naming the --features part it configures."""
        return f"{owner}: {self.help.format(default=self.default)}"


KMEANS = (
    Setting("k", "centroids", int, 1600, "centroids K (default {default}; D = POOL^2 K)", low=1, high=100_000),
    Setting("patches", "patches", int, 400_000, "random 6x6 training patches to learn from (default {default})",
            low=1, high=100_000_000),
    Setting("pool", "pool", int, 2, "sum-pool the activations over a POOL x POOL grid of regions (default "
            "{default}: the paper's quadrants; D = POOL^2 K)", low=1, high=27),
    Setting("iterations", "iterations", int, 10, "k-means iterations (default {default})", low=1),
    Setting("encoding", "encoding", str, "triangle", "{default} (default: max(0, mean z - z_k), Coates et al. "
            "2011) or soft (the soft threshold with polarity split, Coates & Ng 2011: 2 K codes, D = 2 POOL^2 K)",
            choices=("triangle", "soft")),
    Setting("alpha", "alpha", float, 0.25, "the soft code's threshold, with --encoding soft (default {default})",
            low=0.0),
    Setting("power", "power", float, 1.0, "raise each pooled feature to this power (0.5: the signed square root; "
            "default {default:g})", low=0.0, low_open=True, high=1.0),
    Setting("zca_eps", "zca_eps", float, 0.1, "added to the patch covariance's eigenvalues before whitening "
            "(default {default:g})", low=0.0, low_open=True),
)

TORCHVISION = (
    Setting("weights", "backbone_weights", str, None, "a state_dict file, or named weights such as DEFAULT "
            "(needs the network once); default: random weights", metavar="FILE_OR_NAME"),
    Setting("input_size", "input_size", int, 224, "without named weights, images are resized to this "
            "(default {default})", low=16, high=1024),
)

# the --features part each extractor's settings configure ("torchvision:" begins every backbone's name)
SETTINGS = {"kmeans": KMEANS, "torchvision:": TORCHVISION}


def by_flag():
    """{flag dest: (the --features part it configures, Setting)}, in declaration order."""
    return {s.flag: (owner, s) for owner, settings in SETTINGS.items() for s in settings}


def defaults(settings):
    """An extractor's declared settings -> {key: default} (its DEFAULTS' declared part)."""
    return {s.key: s.default for s in settings}
