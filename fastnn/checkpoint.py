"""Checkpoints: a model, its optimizer state and its place in training in one ``.npz``.

Arrays: ``header`` (UTF-8 JSON as uint8), ``param.<layer>.<name>`` (parameters),
``buffer.<layer>.<name>`` (BatchNorm running statistics) and
``optimizer.<index>.<slot>`` (the optimizer's state for parameter ``index``).
The header holds the format name and version, the fastnn version, each layer's
``config()`` (fastnn's own layer classes: ``fastnn.layers.register``), one sample's
input shape, the loss, dtype, seeds, epochs trained, optimizer name, settings and
step count, the learning-rate schedule, the last history, and the shape and dtype of
every array, so a damaged or mismatched file is caught before it is used.

Files are read with ``allow_pickle=False`` (loading never runs code from the file) and
written atomically (``fastnn.atomic``): to a temporary file in the same folder, flushed
and fsynced, then renamed over the target, so an interrupted save leaves the previous
file intact; a save also removes the temporary files of earlier saves to the same path
whose process was killed.
Arrays are stored on the host, so a model saved on one backend loads on any other.
"""

import json
import os
import stat
import zipfile
import zlib

import numpy as np

from fastnn import atomic, optimizers, schedules
from fastnn import layers as layer_types
from fastnn.errors import CheckpointError

FORMAT = "fastnn-checkpoint"
VERSION = 1
HEADER_KEYS = ("layers", "loss", "dtype", "seed", "train_seed", "epochs_trained",
               "optimizer", "lr_schedule", "history", "arrays")


def save(model, path):
    """Write ``model`` to ``path`` atomically; returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    _check_folder(path, folder)
    arrays = _arrays(model)
    header = json.dumps(_header(model, arrays), default=_plain).encode("utf-8")
    arrays["header"] = np.frombuffer(header, dtype=np.uint8)
    try:
        atomic.write(path, lambda file: np.savez(file, **arrays))
    except PermissionError as error:
        raise PermissionError(
            f"cannot save a checkpoint to {path}: no permission to write in the folder "
            f"{folder} ({error.strerror}); save to a folder you can write to, or change "
            f"its permissions"
        ) from error
    return path


def load(path, backend=None):
    """The model saved at ``path``, on ``backend`` (a name or object; None is the current
    backend), with its optimizer state, schedule, seeds, epoch count and history.

    Raises CheckpointError, naming the file and the problem, for a truncated, corrupt,
    foreign, newer-format or inconsistent file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    arrays = _read(path)
    header = _parse_header(path, arrays.pop("header", None))
    _check_arrays(path, header["arrays"], arrays)
    model = _build(path, header, backend)
    _fill(path, model, header, arrays)
    return model


# ---- writing ----

def _check_folder(path, folder):
    """The folder to save in must exist and be a folder; a folder that cannot be
    looked at (no permission on a folder above it) is named as such, not as missing."""
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot save a checkpoint to {path}: the folder {folder} "
                                f"does not exist") from None
    except NotADirectoryError:
        info = None
    except PermissionError as error:
        raise PermissionError(
            f"cannot save a checkpoint to {path}: no permission to reach the folder "
            f"{folder} ({error.strerror}); save to a folder you can write to, or change "
            f"the permissions of the folders above it"
        ) from error
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"cannot save a checkpoint to {path}: {folder} is not a "
                                 f"folder")


def _arrays(model):
    """Every array of the model and its optimizer, as host NumPy arrays by key."""
    host = model.backend.to_numpy
    arrays = {}
    for i, layer in enumerate(model.layers):
        if not layer_types.builtin(layer):
            raise TypeError(
                f"layer {i} ({type(layer).__name__}) cannot be saved: checkpoints hold "
                f"fastnn's own layers ({', '.join(layer_types.TYPES)})"
            )
        arrays.update({f"param.{i}.{p.name}": host(p.value) for p in layer.params})
        arrays.update({f"buffer.{i}.{b.name}": host(b.value) for b in layer.buffers})
    opt = model.optimizer
    if opt is not None:
        if optimizers.TABLE.get(opt.name) is not type(opt):
            raise TypeError(
                f"the optimizer {type(opt).__name__} cannot be saved: checkpoints hold "
                f"fastnn's own optimizers ({', '.join(optimizers.TABLE)})"
            )
        for k, state in enumerate(opt.state):
            arrays.update({f"optimizer.{k}.{slot}": host(a) for slot, a in zip(opt.slots, state)})
    return arrays


def _header(model, arrays):
    import fastnn

    opt = model.optimizer
    return {
        "format": FORMAT,
        "format_version": VERSION,
        "fastnn_version": fastnn.__version__,
        "saved_on_backend": model.backend.name,
        "layers": [layer.config() for layer in model.layers],
        "input_shape": list(model.input_shape),
        "loss": model.loss.config(),
        "dtype": model.dtype_name,
        "seed": model.seed,
        "train_seed": model.train_seed,
        "epochs_trained": model.epochs_trained,
        "optimizer": None if opt is None else {
            "name": opt.name, "config": opt.config(), "t": opt.t, "has_state": bool(opt.state),
        },
        "lr_schedule": None if model.lr_schedule is None else model.lr_schedule.config(),
        "history": model.history,
        "arrays": {key: {"shape": list(a.shape), "dtype": a.dtype.name}
                   for key, a in arrays.items()},
    }


def _plain(value):
    """NumPy numbers and arrays (a seed given as np.int64, say) as JSON-ready values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint header")


# ---- reading and checking ----

def _read(path):
    """All arrays of the .npz at ``path`` by key, or CheckpointError."""
    try:
        with open(path, "rb") as file:  # ours to close, even when np.load fails half-way
            data = np.load(file, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{path} is not a fastnn checkpoint: it holds a single "
                                      f"array, not an .npz archive")
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(
            f"{path} cannot be read as a fastnn checkpoint: it is truncated, corrupt or not "
            f"an .npz file ({type(error).__name__}: {error})"
        ) from None


def _parse_header(path, raw):
    if raw is None:
        raise CheckpointError(f"{path} is an .npz file but not a fastnn checkpoint: it has "
                              f"no 'header' array")
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"an array of {raw.dtype} with shape {raw.shape}")
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} has a corrupt header; it is not valid UTF-8 JSON "
                              f"({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastnn checkpoint: its header does not name "
                              f"the format {FORMAT!r}")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format version {version!r}")
    if version > VERSION:
        import fastnn

        raise CheckpointError(
            f"{path} was written by fastnn {header.get('fastnn_version')} in checkpoint format "
            f"version {version}; this fastnn ({fastnn.__version__}) reads format version "
            f"{VERSION} and older: upgrade fastnn to load it"
        )
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise CheckpointError(f"{path} has an incomplete header: it lacks {', '.join(missing)}")
    return header


def _check_arrays(path, expected, arrays):
    """The file must hold exactly the arrays its header lists, with their shapes and dtypes."""
    missing = sorted(set(expected) - set(arrays) - {"header"})
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks the array(s) "
                              f"{', '.join(missing)} that its header lists")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise CheckpointError(f"{path} holds array(s) {', '.join(extra)} that its header "
                              f"does not list; the file is not a consistent checkpoint")
    for key, array in arrays.items():
        want = expected[key]
        if list(array.shape) != want.get("shape") or array.dtype.name != want.get("dtype"):
            raise CheckpointError(
                f"{path}: array {key} has shape {tuple(array.shape)} and dtype {array.dtype}, "
                f"but the header says shape {tuple(want.get('shape', ()))} and dtype "
                f"{want.get('dtype')}"
            )


def _build(path, header, backend):
    """A fresh Sequential from the header's architecture, on ``backend``."""
    from fastnn.model import Sequential

    layers = []
    try:
        for i, config in enumerate(header["layers"]):
            try:
                layers.append(layer_types.from_config(config))
            except ValueError as error:
                raise ValueError(f"layer {i}: {error}") from None
        # files written before CNNs have no input_shape: their first layer fixes it
        return Sequential(layers, loss=header["loss"], dtype=header["dtype"],
                          seed=header["seed"], backend=backend,
                          input_shape=header.get("input_shape"))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} describes a model that cannot be built: {error}") from None


def _fill(path, model, header, arrays):
    """Put the saved arrays, optimizer, schedule and training position into ``model``."""
    used = set()

    def put(key, shape, what):
        """The saved array ``key`` on the model's backend, after checking it fits."""
        if key not in arrays:
            raise CheckpointError(f"{path} lacks the array {key} ({what})")
        array = arrays[key]
        if tuple(array.shape) != tuple(shape):
            raise CheckpointError(
                f"{path}: array {key} has shape {tuple(array.shape)} but {what} needs "
                f"{tuple(shape)}; the header's architecture does not match the arrays"
            )
        if array.dtype.name != model.dtype_name:
            raise CheckpointError(f"{path}: array {key} is {array.dtype}, but the header says "
                                  f"the model is {model.dtype_name}")
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{path}: array {key} holds NaN or infinite values")
        used.add(key)
        return model.backend.asarray(array, dtype=model.dtype)

    for i, layer in enumerate(model.layers):
        for kind, items in (("param", layer.params), ("buffer", layer.buffers)):
            for p in items:
                p.value = put(f"{kind}.{i}.{p.name}", p.value.shape, f"layer {i} {layer!r}")
    model.optimizer = _optimizer(path, header["optimizer"], model.parameters(), put)
    unused = sorted(set(arrays) - used)
    if unused:
        raise CheckpointError(f"{path} holds array(s) {', '.join(unused)} that its "
                              f"architecture has no place for; the header does not match")
    try:
        schedule = header["lr_schedule"]
        model.lr_schedule = None if schedule is None else schedules.from_config(schedule)
        model.train_seed = _optional_count(header["train_seed"], "train_seed")
        model.epochs_trained = _optional_count(header["epochs_trained"], "epochs_trained")
        if not isinstance(header["history"], dict):
            raise TypeError("the history is not a dict")
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid header entry: {error}") from None
    model.history = header["history"]


def _optional_count(value, name):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return value


def _optimizer(path, saved, params, put):
    """The saved optimizer with its step count and state arrays (None if none was saved)."""
    if saved is None:
        return None
    try:
        opt = optimizers.get(saved["name"], **saved["config"])
        opt.t = _optional_count(saved["t"], "the optimizer step count")
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid optimizer entry: {error}") from None
    if saved.get("has_state"):
        opt.state = [
            tuple(put(f"optimizer.{k}.{slot}", p.value.shape, f"the optimizer's {slot} for "
                      f"parameter {k}") for slot in opt.slots)
            for k, p in enumerate(params)
        ]
    return opt
