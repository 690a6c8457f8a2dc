"""fastnn: a small, readable neural-network library on interchangeable array backends.

The backend is chosen by the FASTNN_BACKEND environment variable when fastnn is
imported (numpy by default), or in code with ``set_backend`` / ``use_backend``.
"""

import sys as _sys
from pathlib import Path as _Path

from fastnn import (
    activations,
    data,
    datasets,
    distributed,
    initializers,
    losses,
    metrics,
    optimizers,
)
from fastnn.backends import availability as available_backends
from fastnn.backends import get_backend, set_backend, use_backend
from fastnn.backends import select_from_environment as _select_from_environment
from fastnn.batchnorm import BatchNorm, BatchNorm2D
from fastnn.builders import from_architecture, from_layer_dims
from fastnn.callbacks import Callback, CSVLogger, EarlyStopping, ProgressBar
from fastnn.checkpoint import CheckpointError, load
from fastnn.conv import Conv2D
from fastnn.errors import (
    BackendUnavailable,
    DistributedError,
    FastnnError,
    NotDifferentiable,
    NotFinite,
    TrainingDiverged,
)
from fastnn.gradcheck import GradcheckResult, gradcheck
from fastnn.layers import Dense, Dropout, Flatten
from fastnn.model import Sequential
from fastnn.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from fastnn.plan import warmup
from fastnn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from fastnn.schedules import CosineDecay, StepDecay

__version__ = "0.1.0"

__all__ = [
    "AdaGrad", "Adam", "BackendUnavailable", "Dense", "Dropout", "FastnnError",
    "GradcheckResult", "Momentum", "Nesterov", "NotDifferentiable", "NotFinite", "RMSprop",
    "SGD",
    "Sequential", "TrainingDiverged", "activations", "available_backends", "data",
    "datasets", "from_architecture", "from_layer_dims", "get_backend", "gradcheck",
    "initializers", "losses", "metrics", "optimizers", "set_backend", "use_backend", "warmup",
    # checkpoints and training extras (fastnn.checkpoint, callbacks, schedules, batchnorm)
    "BatchNorm", "BatchNorm2D", "CSVLogger", "Callback", "CheckpointError", "CosineDecay",
    "EarlyStopping", "ProgressBar", "StepDecay", "callbacks", "load", "schedules",
    # data-parallel training over MPI (fastnn.distributed)
    "DistributedError", "distributed",
    # convolutional networks on NCHW images (fastnn.conv, fastnn.pooling)
    "AvgPool2D", "Conv2D", "Flatten", "GlobalAvgPool2D", "MaxPool2D",
]



def _starting_a_program():
    """True while this import starts the `fastnn` command or `python -m fastnn`, which
    report a bad FASTNN_BACKEND in one line themselves (the command's --backend also
    overrides it). While ``-m`` looks for its module, sys.argv[0] is "-m"."""
    argv0 = (getattr(_sys, "argv", None) or [""])[0]
    if _Path(argv0).name in ("fastnn", "fastnn.exe"):
        return True
    command = getattr(_sys, "orig_argv", [])
    return argv0 == "-m" and ("-mfastnn" in command or ("-m", "fastnn") in zip(command,
                                                                               command[1:]))


try:
    _select_from_environment()
except (ValueError, BackendUnavailable):
    if not _starting_a_program():
        raise  # a library user gets the exception, with the fix in its message
