"""Every error lintorch raises for a problem the user can fix, under one base (torch-free).

A LintorchError (or an OSError) reaching a command becomes one line on stderr and exit 2
(cli.exit_status); anything else is a lintorch bug and keeps its traceback.
"""


class LintorchError(Exception):
    """A problem with the user's input, data, files or machine: the message is one line that says what to do."""


class UserError(LintorchError):
    """A request that cannot be carried out (e.g. CUDA asked for but absent): one line, exit 2."""


class DataError(LintorchError):
    """A problem with the user's data: the message is one line that says what to do."""


class CheckpointError(LintorchError):
    """A checkpoint that cannot be used: the message names the file and the problem."""


class FeatureError(LintorchError):
    """A feature problem the user can fix: the message is one line that says how."""


class BackboneError(FeatureError):
    """A torchvision backbone cannot be built (unknown model, weights missing, no network)."""


class PeerLost(UserError):
    """A collective failed under torchrun: another process died or stopped answering."""
