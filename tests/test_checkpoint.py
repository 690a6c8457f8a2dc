"""Checkpoints: what a file holds, round trips on and across backends, atomic writes
under failure and a killed process, and a clear CheckpointError for every kind of
damaged or mismatched file."""

import json
import os
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import host, make_backend

import fastnn
from fastnn import BatchNorm, CheckpointError, Dense, Dropout, Sequential, checkpoint, datasets

X, Y = datasets.blobs(120, n_classes=3, std=1.5, seed=0)


def trained(backend=None, dtype="float32", epochs=2):
    model = Sequential([Dense(2, 8, "relu"), BatchNorm(8), Dropout(0.2),
                        Dense(8, 3, "softmax")], dtype=dtype, seed=4, backend=backend)
    model.fit(X, Y, epochs=epochs, batch_size=40, optimizer="adam", lr=0.01, seed=7,
              lr_schedule=fastnn.StepDecay(1, 0.5), validation_data=(X[:30], Y[:30]))
    return model


def state_of(model):
    """Every array of the model and its optimizer, on the host."""
    arrays = [host(model.backend, p.value) for p in model.parameters() + model.buffers()]
    arrays += [host(model.backend, a) for s in model.optimizer.state for a in s]
    return arrays


def assert_same_model(a, b, exact=True):
    for x, y in zip(state_of(a), state_of(b), strict=True):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6)
    assert repr(a).split(", backend=")[0] == repr(b).split(", backend=")[0]
    assert a.optimizer.config() == b.optimizer.config() and a.optimizer.t == b.optimizer.t
    assert (a.seed, a.train_seed, a.epochs_trained) == (b.seed, b.train_seed, b.epochs_trained)
    assert a.history == b.history and a.dtype_name == b.dtype_name
    assert a.lr_schedule.config() == b.lr_schedule.config()


def header_of(path):
    with np.load(path, allow_pickle=False) as data:
        return json.loads(data["header"].tobytes().decode("utf-8")), dict(data)


def rewrite(path, arrays, header=None):
    """Write an .npz by hand (with ``header`` re-encoded when given)."""
    arrays = dict(arrays)
    if header is not None:
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


@pytest.fixture
def saved(tmp_path):
    model = trained()
    path = tmp_path / "model.npz"
    assert model.save(path) == str(path)
    return model, path


def test_round_trip_keeps_everything(backend, tmp_path):
    model = trained(dtype="float64")
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fastnn.load(path)
    assert loaded.backend is backend and loaded is not model
    assert_same_model(model, loaded)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.evaluate(X, Y) == model.evaluate(X, Y)


@pytest.mark.parametrize("target", ["numpy", "strict"])
def test_a_model_saved_on_one_backend_loads_on_another(backend, target, tmp_path):
    model = trained()
    path = tmp_path / "m.npz"
    model.save(path)
    target = make_backend(target)
    by_argument = fastnn.load(path, backend=target)
    with fastnn.use_backend(target):
        by_current = fastnn.load(path)
    for loaded in (by_argument, by_current):
        assert loaded.backend is target
        assert all(target.is_array(a) for a in (
            *[p.value for p in loaded.parameters() + loaded.buffers()],
            *[a for s in loaded.optimizer.state for a in s]))
        assert_same_model(model, loaded)
        # the same parameters; fused kernels (numba) may round the forward pass differently
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X),
                                   rtol=1e-5, atol=1e-7)


def test_the_header_describes_the_model(saved):
    model, path = saved
    header, arrays = header_of(path)
    assert header["format"] == "fastnn-checkpoint" and header["format_version"] == 1
    assert header["fastnn_version"] == fastnn.__version__
    assert header["layers"] == [layer.config() for layer in model.layers]
    assert header["layers"][1] == {"type": "BatchNorm", "n_features": 8, "momentum": 0.9,
                                   "eps": 1e-5}
    assert header["loss"] == {"name": "categorical_crossentropy"}
    assert (header["dtype"], header["seed"], header["train_seed"]) == ("float32", 4, 7)
    assert header["epochs_trained"] == 2
    assert header["optimizer"] == {"name": "adam", "config": model.optimizer.config(),
                                   "t": 6, "has_state": True}
    assert header["lr_schedule"] == {"name": "step", "step_size": 1, "gamma": 0.5,
                                     "base_lr": 0.01, "start_epoch": 0}
    assert header["history"] == model.history and len(header["history"]["val_loss"]) == 2
    assert set(arrays) == {"header", *header["arrays"]}
    assert {"param.0.W", "param.1.gamma", "buffer.1.running_var", "optimizer.5.v"} <= set(arrays)
    assert header["arrays"]["param.0.W"] == {"shape": [2, 8], "dtype": "float32"}


def test_a_model_that_never_trained_round_trips(tmp_path):
    model = Sequential([Dense(2, 3, "tanh"), Dense(3, 1, "sigmoid")], seed=1)
    model.save(tmp_path / "fresh.npz")
    loaded = fastnn.load(tmp_path / "fresh.npz")
    assert loaded.optimizer is None and loaded.epochs_trained == 0 and loaded.lr_schedule is None
    np.testing.assert_array_equal(loaded.layers[0].W.value, model.layers[0].W.value)
    loaded.fit(X, Y % 2, epochs=1)  # and it trains


def test_saving_replaces_the_file_and_keeps_the_umask_mode(saved):
    model, path = saved
    model.fit(X, Y, epochs=1, batch_size=40)
    model.save(path)
    assert fastnn.load(path).epochs_trained == 3
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert os.listdir(path.parent) == [path.name]


# ---- interrupted saves ----

@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
def test_an_interrupted_save_leaves_the_previous_file_and_no_temp_file(
        saved, monkeypatch, interruption):
    model, path = saved
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **{k: arrays[k] for k in list(arrays)[:3]})  # part of the arrays
        raise interruption

    monkeypatch.setattr(checkpoint.np, "savez", savez_then_fail)
    model.fit(X, Y, epochs=1, batch_size=40)
    with pytest.raises(type(interruption)):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    assert fastnn.load(path).epochs_trained == 2


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")
def test_a_process_killed_mid_save_leaves_the_previous_file_intact(saved):
    """A real interruption: the saving process dies with SIGKILL half-way through writing.
    Its temporary file stays until the next save to the same path removes it."""
    model, path = saved
    before = path.read_bytes()
    script = f"""
import sys, time
import numpy as np
import fastnn
from fastnn import checkpoint
model = fastnn.load({str(path)!r})
def savez_slowly(file, **arrays):
    file.write(b"PK" + b"x" * 4096)
    file.flush()
    print("writing", flush=True)
    time.sleep(60)
checkpoint.np.savez = savez_slowly
model.save({str(path)!r})
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent) as child:
        line = child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        _, errors = child.communicate(timeout=60)
    assert line.strip() == "writing", errors
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert_same_model(model, fastnn.load(path))
    leftovers = [name for name in os.listdir(path.parent) if name != path.name]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".model.npz.") and leftovers[0].endswith(".tmp")
    assert f"-{child.pid}-" in leftovers[0]  # its writer, named
    model.fit(X, Y, epochs=1, batch_size=40)
    model.save(path)
    assert os.listdir(path.parent) == [path.name]
    assert_same_model(model, fastnn.load(path))


def test_saving_into_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder .*missing.* does not exist"):
        trained(epochs=1).save(tmp_path / "missing" / "m.npz")
    assert os.listdir(tmp_path) == []


def test_saving_where_a_file_stands_for_the_folder_says_so(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="file is not a folder"):
        trained(epochs=1).save(tmp_path / "file" / "m.npz")


def _denied(name, where):
    def refuse(path, *args, **kwargs):
        if str(where) in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return name(path, *args, **kwargs)

    return refuse


def test_saving_into_a_folder_without_permission_says_so(tmp_path, monkeypatch):
    """As a user without write permission sees it (simulated: tests may run as root,
    whom permissions do not stop); ``test_permissions_as_another_user`` checks it for
    real where it can."""
    model, path = trained(epochs=1), tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.os, "open", _denied(os.open, tmp_path))
        with pytest.raises(PermissionError, match=f"cannot save a checkpoint to {path}: no "
                                                  f"permission to write in the folder "
                                                  f"{tmp_path} .*change its permissions"):
            model.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]
    hidden = tmp_path / "hidden" / "m.npz"
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.os, "stat", _denied(os.stat, tmp_path / "hidden"))
        with pytest.raises(PermissionError, match="no permission to reach the folder "
                                                  f"{hidden.parent} .*folders above it"):
            model.save(hidden)


SAVE_AS_OTHER_USER = (
    "import sys, fastnn\n"
    "model = fastnn.from_layer_dims([2, 3, 1], seed=0, backend='numpy')\n"
    "try:\n"
    "    model.save(sys.argv[1])\n"
    "except OSError as error:\n"
    "    print(type(error).__name__, error)\n"
)


def test_permissions_as_another_user(tmp_path):
    """A real user without permission: this one if it is not root, else 'nobody' by
    setpriv where it exists."""
    import shutil
    import tempfile

    command = [sys.executable, "-c", SAVE_AS_OTHER_USER]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, which permissions do not stop, and no setpriv to "
                        "run as another user (the simulated test covers the messages)")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    base = Path(tempfile.mkdtemp())  # reachable by the other user, unlike tmp_path
    try:
        os.chmod(base, 0o755)
        (base / "locked").mkdir(mode=0o555)
        (base / "private" / "inside").mkdir(parents=True)
        os.chmod(base / "private", 0)  # not even its owner may look inside
        env = dict(os.environ, FASTNN_BACKEND="numpy")
        results = [subprocess.run([*command, str(base / where / "m.npz")], env=env,
                                  capture_output=True, text=True, timeout=120)
                   for where in ("locked", "private/inside")]
    finally:
        for folder in (base / "locked", base / "private"):
            os.chmod(folder, 0o755)
        shutil.rmtree(base)
    if all(run.returncode != 0 and not run.stdout for run in results):
        pytest.skip(f"the other user cannot run this Python: {results[0].stderr[-300:]}")
    locked, private = (run.stdout.strip() for run in results)
    assert locked.startswith("PermissionError cannot save a checkpoint") and \
        "no permission to write in the folder" in locked, results[0]
    assert private.startswith("PermissionError") and \
        "no permission to reach the folder" in private, results[1]


def test_only_fastnn_layers_and_optimizers_can_be_saved(tmp_path):
    class Custom(fastnn.SGD):
        name = "custom"

    model = Sequential([Dense(2, 1, "sigmoid")])
    model.fit(X, Y % 2, optimizer=Custom(lr=0.1))
    with pytest.raises(TypeError, match="optimizer Custom cannot be saved"):
        model.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# ---- damaged and mismatched files ----

def assert_refused(path, *patterns):
    with pytest.raises(CheckpointError) as info:
        fastnn.load(path)
    message = str(info.value)
    assert str(path) in message
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError,
                                                                   fastnn.FastnnError)


@pytest.mark.parametrize("keep", [0.5, 0.98, 0.02])
def test_a_truncated_file(saved, keep):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert_refused(path, "truncated, corrupt or not an .npz file")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    assert_refused(path, "cannot be read as a fastnn checkpoint")


def test_a_flipped_byte_inside_an_array(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("param.0.W.npy")
    at = info.header_offset  # the local header: 30 bytes, then the name and extra field
    name_length, extra_length = (int.from_bytes(data[i:i + 2], "little") for i in (at + 26,
                                                                                   at + 28))
    data[at + 30 + name_length + extra_length + info.file_size - 3] ^= 0xFF  # a value of W
    path.write_bytes(bytes(data))
    assert_refused(path, "corrupt", "Bad CRC-32")


def test_a_single_npy_array(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    assert_refused(path, "holds a single array")


def test_an_npz_without_a_header(tmp_path):
    path = tmp_path / "plain.npz"
    rewrite(path, {"W": np.zeros(3)})
    assert_refused(path, "not a fastnn checkpoint", "no 'header'")


def test_an_npz_missing_an_array(saved):
    _, path = saved
    header, arrays = header_of(path)
    del arrays["param.0.W"]
    rewrite(path, arrays)
    assert_refused(path, "incomplete", "param.0.W")


def test_an_npz_missing_an_array_in_its_header_too(saved):
    _, path = saved
    header, arrays = header_of(path)
    del arrays["optimizer.1.m"], header["arrays"]["optimizer.1.m"]
    rewrite(path, arrays, header)
    assert_refused(path, "lacks the array optimizer.1.m")


def test_a_newer_format_version(saved):
    _, path = saved
    header, arrays = header_of(path)
    header["format_version"] = 99
    rewrite(path, arrays, header)
    assert_refused(path, "format version 99", "upgrade fastnn")


def test_another_format_or_a_corrupt_header(saved):
    _, path = saved
    header, arrays = header_of(path)
    rewrite(path, arrays, {**header, "format": "keras"})
    assert_refused(path, "not a fastnn checkpoint")
    rewrite(path, {**arrays, "header": np.frombuffer(b'{"format": ', dtype=np.uint8)})
    assert_refused(path, "corrupt header")
    del header["optimizer"]
    rewrite(path, arrays, header)
    assert_refused(path, "incomplete header", "optimizer")


def test_a_header_whose_architecture_does_not_match_the_arrays(saved):
    _, path = saved
    header, arrays = header_of(path)
    header["layers"][0]["n_out"] = 9
    header["layers"][1]["n_features"] = 9
    header["layers"][3]["n_in"] = 9
    rewrite(path, arrays, header)
    assert_refused(path, "param.0.W has shape (2, 8)", "needs (2, 9)", "does not match")


def test_arrays_that_do_not_match_the_header_index(saved):
    model, path = saved
    header, arrays = header_of(path)
    arrays["param.0.W"] = np.zeros((3, 8), np.float32)
    rewrite(path, arrays)
    assert_refused(path, "param.0.W has shape (3, 8)", "header says shape (2, 8)")
    model.save(path)
    header, arrays = header_of(path)
    arrays["extra"], header["arrays"]["extra"] = np.zeros(1), {"shape": [1], "dtype": "float64"}
    rewrite(path, arrays, header)
    assert_refused(path, "extra", "no place for")


def test_wrong_dtype_and_non_finite_values(saved):
    _, path = saved
    header, arrays = header_of(path)
    header["dtype"] = "float64"
    rewrite(path, arrays, header)
    assert_refused(path, "is float32", "model is float64")
    header, arrays = header_of(path)
    header["dtype"] = "float32"
    arrays["param.0.b"] = np.full(8, np.nan, np.float32)
    rewrite(path, arrays, header)
    assert_refused(path, "param.0.b holds NaN")


def test_an_unbuildable_architecture(saved):
    _, path = saved
    header, arrays = header_of(path)
    header["layers"][0] = {"type": "Conv3D"}
    rewrite(path, arrays, header)
    assert_refused(path, "cannot be built", "unknown type 'Conv3D'")
    header["layers"][0] = {"type": "Dense", "n_in": 2, "n_out": 8, "activation": "cubic"}
    rewrite(path, arrays, header)
    assert_refused(path, "cannot be built", "unknown activation 'cubic'")


def test_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*nothing.npz"):
        fastnn.load(tmp_path / "nothing.npz")


def test_numpy_integer_seeds_are_stored_as_plain_numbers(tmp_path):
    model = Sequential([Dense(2, 3, "softmax")], seed=np.int64(3))
    model.fit(X, Y, seed=np.uint32(8))
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load(tmp_path / "m.npz")
    assert (loaded.seed, loaded.train_seed) == (3, 8)
    np.testing.assert_array_equal(loaded.layers[0].W.value, model.layers[0].W.value)


def test_an_empty_file(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    assert_refused(tmp_path / "empty.npz", "cannot be read as a fastnn checkpoint")
