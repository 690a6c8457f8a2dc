"""The exceptions fastnn raises on purpose, so callers can catch them by meaning."""


class FastnnError(Exception):
    """Base class for fastnn's own errors."""


class BackendUnavailable(FastnnError, RuntimeError):
    """A known backend cannot run here: its package is missing, there is no GPU, or it
    is not built yet. The message says which and how to fix it."""


class NotDifferentiable(FastnnError, ValueError):
    """A gradient was needed through something that has none (the step activation)."""


class TrainingDiverged(FastnnError, ArithmeticError):
    """The loss or the parameters became NaN or infinite during ``fit``.

    The model keeps the last parameters whose loss on the training data is finite (the
    message says which, or that there were none); ``history`` holds the epochs that
    completed before the divergence.
    """

    def __init__(self, message, history=None):
        super().__init__(message)
        self.history = history


class NotFinite(FastnnError, ArithmeticError):
    """A model's outputs or loss came out NaN or infinite from finite inputs: the
    arithmetic overflowed the model's dtype (inputs, or parameters, too large). The
    message gives the sizes involved and the ways out."""


class CheckpointError(FastnnError, ValueError):
    """A checkpoint file cannot be loaded: it is truncated, corrupt, not a fastnn
    checkpoint, from a newer format, or its header does not match its arrays. The
    message names the file and the problem."""


class DistributedError(FastnnError, RuntimeError):
    """Data-parallel training could not go on: the ranks disagree on the model, the data
    or the settings, or one rank failed before training started. Every rank raises it
    with the same message (see ``fastnn.distributed``)."""
