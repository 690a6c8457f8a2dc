"""The ``fastnn`` command: info, train and check run in-process through ``main(argv)``;
every bad argument gives one line on stderr and exit status 2; the documented commands
work; and the installed entry point runs as a subprocess."""

import json
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from strict_backend import StrictBackend, array_api_strict
from test_idx import write_mnist

import fastnn
from fastnn import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, backends
from fastnn.backends.numpy_backend import NumpyBackend
from fastnn.cli import check, info, main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``fastnn argv``."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastnn: error: ") and "Traceback" not in err
    return lines[0]


def documented_cli_commands():
    """The ``fastnn ...`` lines of the command-line guide's shell blocks, split."""
    text = (ROOT / "docs" / "guide" / "cli.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [shlex.split(line, comments=True) for block in blocks
            for line in block.splitlines() if line.startswith("fastnn ")]


# --- info ---------------------------------------------------------------------------------


def test_info_text(capsys):
    status, out, err = run_cli(capsys, "info")
    assert status == 0 and err == ""
    assert f"fastnn {fastnn.__version__}" in out
    assert "numpy  available (current)" in out
    for name, reason in fastnn.available_backends().items():
        if reason is not None:
            assert f"{name:<6} unavailable: {reason}" in out
    assert re.search(rf"^  numpy\s+{re.escape(np.__version__)}$", out, re.M)
    assert re.search(r"^  blas: \S+ \S+", out, re.M)
    assert f"of {os.cpu_count()}" in out and "OMP_NUM_THREADS" in out
    assert "GPU:" in out


def test_info_json(capsys):
    status, out, _ = run_cli(capsys, "info", "--json")
    report = json.loads(out)
    assert status == 0
    assert report["fastnn"] == fastnn.__version__
    assert report["current_backend"] == fastnn.get_backend().name
    assert {n: e["reason"] for n, e in report["backends"].items()} == \
        fastnn.available_backends()
    assert report["packages"]["numpy"] == np.__version__
    assert report["threads"]["cpu_count"] == os.cpu_count()
    assert report["blas"] and all(lib["internal_api"] for lib in report["blas"])
    assert isinstance(report["gpu"]["devices"], list)


def test_info_reports_an_unusable_fastnn_backend(capsys, monkeypatch):
    monkeypatch.setenv("FASTNN_BACKEND", "bogus")
    status, out, _ = run_cli(capsys, "info")
    assert status == 0
    assert "FASTNN_BACKEND='bogus' cannot be used: FASTNN_BACKEND='bogus' is not a fastnn " \
           "backend" in out


def test_blas_from_numpy_build_without_threadpoolctl(monkeypatch):
    real = info.importlib.util.find_spec
    monkeypatch.setattr(info.importlib.util, "find_spec",
                        lambda name, *a: None if name == "threadpoolctl" else real(name, *a))
    (lib,) = info.blas()
    expected = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert lib["internal_api"] == expected["name"] and lib["num_threads"] is None
    line = [x for x in info.text_lines({**info.collect(), "blas": [lib]}) if "blas:" in x][0]
    assert line.endswith("(install threadpoolctl for threads)")


def test_info_names_the_gemm_the_numba_epoch_kernel_calls(capsys, monkeypatch):
    gemm = info.numba_gemm()
    if gemm["reason"] is None:
        assert os.path.exists(gemm["path"]) and "gemm" in gemm["symbol"]
        status, out, _ = run_cli(capsys, "info")
        assert f"numba epoch kernel calls {gemm['symbol']}" in out and gemm["path"] in out
        from fastnn.kernels.numba import blas as numba_blas

        monkeypatch.setattr(numba_blas, "find", lambda: None)
        gemm = info.numba_gemm()
        assert gemm["path"] is None and "runs op by op" in gemm["reason"]
    else:
        assert gemm["path"] is None and gemm["reason"]
    lines = info.text_lines({**info.collect(), "numba_gemm": gemm})
    assert f"  numba epoch kernel GEMM: none ({gemm['reason']})" in lines


def fake_cupy(available=True, broken=False):
    """A stand-in CuPy module with one 2 GiB device, for the GPU report."""
    def memory():
        if broken:
            raise RuntimeError("cudaErrorInsufficientDriver")
        return 2**30, 2**31

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=memory,
                                    getDeviceProperties=lambda i: {"name": b"Fake GPU"})
    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    cuda = types.SimpleNamespace(is_available=lambda: available, runtime=runtime, Device=Device)
    return types.SimpleNamespace(cuda=cuda)


@pytest.mark.parametrize("available, broken, expected", [
    (True, False, "  0: Fake GPU, 2.0 GiB (1.0 GiB free)"),
    (False, False, "  none: CuPy finds no usable CUDA device"),
    (True, True, "  none: CuPy could not query the GPU: cudaErrorInsufficientDriver"),
])
def test_gpu_report(monkeypatch, available, broken, expected):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(available, broken))
    real = info.importlib.util.find_spec
    monkeypatch.setattr(info.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "cupy" else real(name, *a))
    report = {**info.collect(), "gpu": info.gpu()}
    assert expected in info.text_lines(report)


# --- train --------------------------------------------------------------------------------


def test_documented_examples_run_and_reach_their_accuracy(capsys, tmp_path, monkeypatch):
    """The command-line guide's commands (docs/guide/cli.md), word for word, from an
    empty directory."""
    monkeypatch.chdir(tmp_path)
    commands = documented_cli_commands()
    assert [c[1] for c in commands] == ["info", "train", "train", "train", "train", "check"]
    for command in commands:
        status, out, err = run_cli(capsys, *command[1:])
        assert status == 0, err
    planar = json.loads((tmp_path / "runs/planar/metrics.json").read_text())
    digits = json.loads((tmp_path / "runs/digits/metrics.json").read_text())
    assert planar["train"]["accuracy"] >= 0.90  # the course reports about 90%
    assert "test" not in planar
    assert digits["test"]["accuracy"] >= 0.95
    for name in ("history.csv", "history.json", "learning_curves.png", "decision_boundary.png"):
        assert (tmp_path / "runs/planar" / name).stat().st_size > 0
    assert not (tmp_path / "runs/digits/decision_boundary.png").exists()  # 64-D inputs
    more = json.loads((tmp_path / "runs/digits-more/metrics.json").read_text())
    assert more["test"]["accuracy"] >= 0.95  # resumed on the numba backend
    assert fastnn.load(tmp_path / "runs/digits-more/model.npz").epochs_trained == 40
    cnn = json.loads((tmp_path / "runs/digits-cnn/metrics.json").read_text())
    assert cnn["test"]["accuracy"] >= 0.985  # the convolutional network on the 8x8 images
    assert fastnn.load(tmp_path / "runs/digits-cnn/model.npz").shapes[:2] == [(1, 8, 8),
                                                                            (30, 8, 8)]


def test_resume_continues_exactly_as_one_run(capsys, tmp_path):
    common = ["--dataset", "moons", "--n-samples", 200, "--batch-size", 32, "--seed", 3]
    run_cli(capsys, "train", *common, "--epochs", 6, "--optimizer", "adam", "--out",
            tmp_path / "whole")
    run_cli(capsys, "train", *common, "--epochs", 3, "--optimizer", "adam", "--out",
            tmp_path / "half")
    status, out, err = run_cli(capsys, "train", *common, "--epochs", 3, "--resume",
                               tmp_path / "half/model.npz", "--out", tmp_path / "rest")
    assert status == 0, err
    whole, rest = (fastnn.load(tmp_path / d / "model.npz") for d in ("whole", "rest"))
    assert rest.epochs_trained == whole.epochs_trained == 6
    for a, b in zip(whole.parameters(), rest.parameters()):
        np.testing.assert_array_equal(a.value, b.value)


def test_resume_refuses_options_that_rebuild_the_model(capsys, tmp_path):
    run_cli(capsys, "train", "--epochs", 1, "--out", tmp_path)
    status, out, err = run_cli(capsys, "train", "--resume", tmp_path / "model.npz",
                               "--arch", "2-8-1")
    assert status == 2
    assert "--arch cannot be combined with --resume" in one_error_line(err)


def test_outputs_agree_with_each_other(capsys, tmp_path):
    out = tmp_path / "run"
    status, stdout, _ = run_cli(capsys, "train", "--dataset", "moons", "--n-samples", 200,
                                "--epochs", 6, "--batch-size", 32, "--optimizer", "adam",
                                "--lr", 0.01, "--out", out)
    assert status == 0
    history = json.loads((out / "history.json").read_text())
    assert list(history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert len(lines) == 7
    np.testing.assert_allclose([float(v) for v in lines[-1].split(",")],
                               [6] + [history[k][-1] for k in history])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "numpy" and metrics["settings"]["epochs"] == 6
    assert metrics["test"]["accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert set(metrics["train"]) == {"loss", "accuracy"}
    assert f"test loss {metrics['test']['loss']:.4f}" in stdout
    assert "160 training samples, 40 held out for testing" in stdout


def test_the_same_seed_gives_the_same_run(capsys, tmp_path):
    argv = ["train", "--dataset", "spirals", "--epochs", 5, "--batch-size", 16, "--quiet",
            "--no-plots"]
    for name in ("a", "b"):
        assert run_cli(capsys, *argv, "--out", tmp_path / name)[0] == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text()) for n in "ab")
    assert a == b
    assert run_cli(capsys, *argv, "--seed", 1, "--out", tmp_path / "c")[0] == 0
    assert json.loads((tmp_path / "c" / "history.json").read_text()) != a


def test_epoch_lines_and_quiet(capsys):
    status, out, _ = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 4,
                             "--log-every", 2)
    assert status == 0
    epochs = re.findall(r"^epoch (\d+)/4 - loss [\d.]+ - accuracy", out, re.M)
    assert epochs == ["2", "4"]
    status, out, err = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 4, "--quiet")
    assert status == 0 and out == "" and err == ""


def test_standardize_is_recorded(capsys, tmp_path):
    status, _, _ = run_cli(capsys, "train", "--dataset", "blobs", "--standardize",
                           "--epochs", 2, "--out", tmp_path, "--no-plots")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert status == 0 and len(metrics["standardize"]["mean"]) == 2
    assert not list(tmp_path.glob("*.png"))


def test_optimizer_settings_reach_the_optimizer(capsys):
    status, out, _ = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1,
                             "--optimizer", "nesterov", "--lr", 0.05, "--momentum", 0.5,
                             "--weight-decay", 0.001)
    assert status == 0
    assert "Nesterov(lr=0.05, weight_decay=0.001, momentum=0.5)" in out


def test_json_architecture(capsys, tmp_path):
    arch = [{"input_dim": 2, "output_dim": 6, "activation": "tanh"},
            {"input_dim": 6, "output_dim": 3, "activation": "softmax"}]
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    status, out, _ = run_cli(capsys, "train", "--dataset", "spirals", "--arch", path,
                             "--epochs", 2)
    assert status == 0 and "arch.json (categorical_crossentropy)" in out


def test_csv_dataset_classification_and_regression(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    table = tmp_path / "c.csv"
    table.write_text("a;b;c;label\n" + "".join(
        f"{a};{b};{c};{int(a + b > 0)}\n" for a, b, c in X))
    status, out, _ = run_cli(capsys, "train", "--dataset", f"csv:{table}", "--epochs", 3,
                             "--out", tmp_path / "cls")
    assert status == 0 and "3-32-1 relu/sigmoid (binary_crossentropy)" in out
    assert not (tmp_path / "cls" / "decision_boundary.png").exists()  # 3 features
    values = tmp_path / "r.csv"
    values.write_text("".join(f"{a + 0.5 * b},{a},{b}\n" for a, b, _ in X))
    status, out, _ = run_cli(capsys, "train", "--dataset", f"csv:{values}", "--label", 0,
                             "--epochs", 3, "--out", tmp_path / "reg")
    assert status == 0 and "2-32-1 relu/identity (mse)" in out
    metrics = json.loads((tmp_path / "reg" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "rmse"}
    assert not (tmp_path / "reg" / "decision_boundary.png").exists()  # regression


def test_mnist_directory_uses_its_own_test_files(capsys, tmp_path):
    write_mnist(tmp_path, "train", n=12, gz=True)
    write_mnist(tmp_path, "test", n=5)
    status, out, _ = run_cli(capsys, "train", "--dataset", f"mnist:{tmp_path}",
                             "--arch", "784-8-10", "--epochs", 2)
    assert status == 0
    assert "784-8-10 relu/softmax" in out and "12 training samples, 5 held out" in out


def test_a_cnn_trains_on_the_digits_images_and_saves_a_checkpoint(capsys, tmp_path):
    status, out, err = run_cli(capsys, "train", "--dataset", "digits", "--model",
                               "conv4x3same-maxpool2-dense16", "--standardize", "--epochs", 2,
                               "--batch-size", 32, "--optimizer", "adam", "--lr", 0.01,
                               "--out", tmp_path, "--no-plots")
    assert status == 0, err
    assert out.startswith("training conv4x3same-maxpool2-dense16 relu/softmax "
                          "(categorical_crossentropy) with Adam(")
    model = fastnn.load(tmp_path / "model.npz")
    assert model.shapes == [(1, 8, 8), (4, 8, 8), (4, 4, 4), (64,), (16,), (10,)]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["standardize"]["mean"]) == 64  # per pixel, from the training part
    assert metrics["test"]["accuracy"] > 0.8  # learning after two epochs (10% is chance)
    status, out, err = run_cli(capsys, "train", "--dataset", "digits", "--standardize",
                               "--epochs", 1, "--batch-size", 32, "--resume",
                               tmp_path / "model.npz")
    assert status == 0, err
    assert f"training {tmp_path / 'model.npz'} (2 epochs trained" in out
    status, _, err = run_cli(capsys, "train", "--dataset", "moons", "--resume",
                             tmp_path / "model.npz")
    assert status == 2 and "model.npz is a convolutional network and needs images, but " \
        "dataset moons gives flat samples" in one_error_line(err)


def test_a_preset_on_mnist_images(capsys, tmp_path):
    write_mnist(tmp_path, "train", n=12)
    write_mnist(tmp_path, "test", n=5)
    status, out, err = run_cli(capsys, "train", "--dataset", f"mnist:{tmp_path}",
                               "--model", "simplecnn", "--epochs", 2, "--out", tmp_path / "run",
                               "--no-plots")
    assert status == 0, err
    assert "simplecnn (conv30x5-maxpool2-dense100) relu/softmax" in out
    assert "12 training samples, 5 held out" in out
    assert fastnn.load(tmp_path / "run/model.npz").shapes[3] == (4320,)  # Saito's size


def test_backend_option_overrides_the_environment(capsys, monkeypatch):
    unusable = [n for n, reason in fastnn.available_backends().items() if reason]
    if not unusable:
        pytest.skip("every backend can run here, so none is unusable")
    monkeypatch.setenv("FASTNN_BACKEND", unusable[0])
    status, _, err = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1)
    assert status == 2 and f"the '{unusable[0]}' backend" in one_error_line(err)
    status, out, _ = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1,
                             "--backend", "numpy")
    assert status == 0 and "on the 'numpy' backend" in out


def test_divergence_exits_1_and_keeps_the_history(capsys, tmp_path):
    status, _, err = run_cli(capsys, "train", "--dataset", "blobs", "--arch", "2-16-1",
                             "--output-activation", "identity", "--loss", "mse",
                             "--lr", 10, "--epochs", 50, "--out", tmp_path)
    assert status == 1
    line = one_error_line(err)
    assert "training diverged at epoch" in line
    completed = int(re.search(r"at epoch (\d+)", line).group(1)) - 1
    assert len((tmp_path / "history.csv").read_text().splitlines()) == completed + 1
    assert "diverged" in json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.parametrize("argv, fragment", [
    ([], "choose a command: info, train or check"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--dataset", "mons"], "unknown dataset 'mons'.*Did you mean 'moons'"),
    (["train", "--dataset", "moons:x"], "--dataset moons takes no ':' argument"),
    (["train", "--dataset", "mnist"], "--dataset mnist needs a DIR: --dataset mnist:DIR"),
    (["train", "--dataset", "mnist:/no/such/dir"], "MNIST directory '/no/such/dir' does not"),
    (["train", "--dataset", "csv:/no/such.csv"], "CSV file '/no/such.csv' does not exist"),
    (["train", "--dataset", "digits", "--noise", "0.1"], "--noise does not apply to dataset "
                                                         "'digits'"),
    (["train", "--dataset", "csv:x.csv", "--noise", "0.1"], "--noise applies to generated"),
    (["train", "--dataset", "moons", "--label", "y"], "--label applies to CSV files"),
    (["train", "--dataset", "mnist:d", "--test-size", "0.1"], "--test-size applies to datasets "
                                                              "without their own test part"),
    (["train", "--noise", "-1"], r"noise must be in \[0.0, inf\); got -1.0"),
    (["train", "--hidden-activation", "relux"], "unknown activation 'relux'"),
    (["train", "--output-activation", "softmax", "--arch", "2-4-1", "--loss", "bce"],
     "binary_crossentropy needs a sigmoid output layer"),
    (["train", "--loss", "hinge"], "unknown loss 'hinge'"),
    (["train", "--optimizer", "adamw"], "unknown optimizer 'adamw'"),
    (["train", "--optimizer", "adam", "--momentum", "0.9"],
     "--momentum does not apply to the adam optimizer; it takes --lr, --beta1, --beta2, "
     "--eps, --weight-decay"),
    (["train", "--optimizer", "momentum", "--momentum", "1.5"], r"momentum must be in \[0.0"),
    (["train", "--backend", "tf"], "--backend='tf' is not a fastnn backend"),
    (["train", "--arch", "2-x-1"], "--arch must be layer sizes such as 2-4-1 or a JSON"),
    (["train", "--arch", "3-4-1"], "--arch 3-4-1 takes 3 inputs, but dataset planar has 2 "
                                   "features per sample; start the architecture with 2"),
    (["train", "--arch", "no_such.json"], "architecture file 'no_such.json' does not exist"),
    (["train", "--init", "normal:abc"], "--init normal:abc: the scale after ':' must be a"),
    (["train", "--init", "uniform"], "unknown initializer 'uniform'"),
    (["train", "--out", ""], "argument --out: must name a folder; got '' \\(an unset shell "
                             "variable\\?\\), which would write into the current folder"),
    (["train", "--resume", " "], "argument --resume: must name a file; got ' '"),
    (["train", "--epochs", "0"], "argument --epochs: must be a positive int; got '0'"),
    (["train", "--epochs", "ten"], "argument --epochs: must be a positive int; got 'ten'"),
    (["train", "--batch-size", "-3"], "argument --batch-size: must be a positive int"),
    (["train", "--lr", "-1"], "argument --lr: must be a positive float; got '-1'"),
    (["train", "--lr", "nan"], "argument --lr: must be a positive float; got 'nan'"),
    (["train", "--lr", "inf"], "lr must be a positive number; got inf"),
    (["train", "--test-size", "1.5"], r"argument --test-size: must be a fraction in \[0, 1\)"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["train", "--model", "simplecnn"], "--model simplecnn is a convolutional network and "
                                        "needs images, but dataset planar gives flat samples"),
    (["train", "--dataset", "csv:x.csv", "--model", "lenet"], "needs images, but dataset "
                                                              "csv:x.csv gives flat samples"),
    (["train", "--dataset", "digits", "--model", "lenett"],
     "unknown model 'lenett': give a preset \\(simplecnn, lenet\\) or layer tokens joined by"),
    (["train", "--dataset", "digits", "--model", "conv8x3-pool2"],
     "model spec 'conv8x3-pool2': 'pool2' is not a layer"),
    (["train", "--dataset", "digits", "--model", "lenet"],
     r"model 'lenet' does not fit samples of shape \(1, 8, 8\): conv16x5 \(Conv2D\(6, 16, 5, "
     r"activation='relu'\)\) has a 5x5 window but its input is only 4 rows high"),
    (["train", "--dataset", "digits", "--model", "simplecnn", "--arch", "64-10"],
     "--arch and --model both give the model; give one of them"),
    (["check", "--backends", "tf"], "--backends='tf' is not a fastnn backend"),
    (["check", "--backends", ","], "--backends needs at least one name"),
])
def test_argument_errors_are_one_line(capsys, argv, fragment):
    status, out, err = run_cli(capsys, *argv)
    assert status == 2
    assert re.search(fragment, one_error_line(err)), err
    assert out == ""


def test_labels_beyond_the_output_layer(capsys):
    """Found when training starts, after the line that describes the run."""
    status, out, err = run_cli(capsys, "train", "--dataset", "blobs", "--arch", "2-4-2")
    assert status == 2 and out.startswith("training 2-4-2 relu/softmax")
    assert "labels must be integers 0..1" in one_error_line(err)


def test_bad_json_architecture(capsys, tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"input_dim": 2, "output_dim": 1,}]')
    _, _, err = run_cli(capsys, "train", "--arch", path)
    assert "a.json' is not valid JSON (Expecting property name" in one_error_line(err)
    path.write_text('[{"input_dim": 3, "output_dim": 1}]')
    _, _, err = run_cli(capsys, "train", "--arch", path)
    assert "takes 3 inputs, but dataset planar has 2" in one_error_line(err)
    path.write_text('[{"input_dim": 2, "output_dim": 4}, {"input_dim": 5, "output_dim": 1}]')
    _, _, err = run_cli(capsys, "train", "--arch", path)
    assert "nn_architecture[1] has input_dim 5" in one_error_line(err)
    status, _, err = run_cli(capsys, "train", "--arch", path, "--hidden-activation", "tanh")
    assert status == 2 and "a JSON architecture names each layer's activation" in err


def test_corrupt_and_unwritable_files(capsys, tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")
    status, _, err = run_cli(capsys, "train", "--dataset", f"mnist:{tmp_path}")
    assert status == 2 and "is truncated" in one_error_line(err)
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1, "--quiet",
                             "--out", blocker / "sub")
    assert status == 2 and "fastnn: error: " in one_error_line(err)


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: a read-only one, or for root (whom
    permissions do not stop) /sys, which refuses new files to everyone."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    return folder


@pytest.mark.parametrize("case", ["file", "under a file", "unwritable", "output is a folder"])
def test_out_is_checked_before_training(capsys, tmp_path, case):
    """A bad --out stops the command before training (nothing printed, nothing
    written), in one line that names --out and the fix."""
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "run" / "model.npz").mkdir(parents=True)
    out, expected = {
        "file": (tmp_path / "file", "is a file; --out needs a folder (created if missing), "
                                    "so give another path"),
        "under a file": (tmp_path / "file" / "run", f"cannot be made: {tmp_path / 'file'} is "
                                                    f"a file; --out needs a folder"),
        "unwritable": (unwritable_folder(tmp_path) / "run", "cannot write in "),
        "output is a folder": (tmp_path / "run", "the output file model.npz would replace "
                                                 "the folder"),
    }[case]
    status, stdout, err = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1,
                                  "--out", out)
    line = one_error_line(err)
    assert status == 2 and stdout == ""
    assert line.startswith(f"fastnn: error: --out {out}") and expected in line
    assert (tmp_path / "file").read_text() == "keep me"
    made = {p.name for p in tmp_path.rglob("*")} - {"read-only"}
    assert made == {"file", "run", "model.npz"}  # as before the command


def test_out_may_exist_or_be_made(capsys, tmp_path):
    (tmp_path / "old").mkdir()
    for out in (tmp_path / "old", tmp_path / "new" / "deeper"):
        status, _, err = run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1, "--quiet",
                                 "--no-plots", "--out", out)
        assert status == 0, err
        assert (out / "model.npz").is_file()


def test_missing_matplotlib_is_reported_before_training(capsys, monkeypatch, tmp_path):
    from fastnn.cli import train

    real = train.importlib.util.find_spec
    monkeypatch.setattr(train.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    status, out, err = run_cli(capsys, "train", "--out", tmp_path)
    assert status == 2 and out == ""
    assert "pip install 'fastnn[plot]', or pass --no-plots" in one_error_line(err)
    assert run_cli(capsys, "train", "--epochs", 1, "--out", tmp_path, "--no-plots")[0] == 0


# --- check --------------------------------------------------------------------------------


CASES = len(check._cases())  # fastnn check's rows per backend


def test_check_covers_every_trainable_activation_the_four_losses_and_a_cnn():
    cases = check._cases()
    hidden = [name.removeprefix("hidden ") for name, *_ in cases if name.startswith("hidden")]
    assert hidden == [n for n in fastnn.activations.trainable()
                      if fastnn.activations.TABLE[n].elementwise]
    assert [name for name, *_ in cases if name.startswith("loss")] == [
        "loss categorical_crossentropy", "loss mse", "loss mae", "loss huber"]
    name, layers, loss, X, y = cases[-1]
    assert name.startswith("conv") and CASES == len(hidden) + 5
    assert [type(layer) for layer in layers()] == [Conv2D, MaxPool2D, Conv2D, AvgPool2D,
                                                   Flatten, Dense]
    assert X.shape == (6, 2, 6, 6) and loss == "categorical_crossentropy"


def test_check_passes_here(capsys):
    status, out, err = run_cli(capsys, "check")
    assert status == 0 and err == ""
    rows = [line.split() for line in out.splitlines()[1:-1]]
    numpy_rows = [r for r in rows if r[0] == "numpy"]
    assert len(numpy_rows) == CASES
    assert {r[1] for r in numpy_rows} == {"hidden", "loss", "conv"}
    assert all(r[-1] == "pass" and r[-2] == "reference" for r in numpy_rows)
    assert all(float(r[3]) < 1e-6 for r in numpy_rows)
    for reason in fastnn.available_backends().values():
        if reason:
            assert f"skipped: {reason}" in out
    assert out.splitlines()[-1] == "all checks passed"


def test_check_only_named_backends(capsys):
    status, out, _ = run_cli(capsys, "check", "--backends", " NumPy ")
    assert status == 0
    assert {line.split()[0] for line in out.splitlines()[1:-1]} == {"numpy"}


@pytest.mark.parametrize("value", ["numpy", " NumBa "])
def test_check_checks_the_backend_fastnn_backend_names(capsys, monkeypatch, value):
    name = value.strip().lower()
    monkeypatch.setenv("FASTNN_BACKEND", value)
    reason = fastnn.available_backends()[name]
    if name == "numba" and reason is None:
        # Which backends run is all this case adds: test_check_passes_here runs Numba's
        # rows end to end, and running them twice compiled the float64 kernels twice
        # (over a minute of CI, cold).
        asked = []
        monkeypatch.setattr(check, "check", lambda chosen: asked.append(chosen) or [])
        assert run_cli(capsys, "check")[0] == 0 and asked == [["numba"]]
        return
    status, out, err = run_cli(capsys, "check")
    if reason is not None:  # numba not installed: asked for, so an error
        assert status == 2 and out == "" and one_error_line(err) == f"fastnn: error: {reason}"
        return
    assert status == 0 and err == ""
    rows = [line.split() for line in out.splitlines()[1:-1]]
    assert len(rows) == CASES and {r[0] for r in rows} == {name}
    assert all(r[-1] == "pass" for r in rows) and out.splitlines()[-1] == "all checks passed"
    monkeypatch.setenv("FASTNN_BACKEND", "tensorflow")  # --backends overrides it
    assert run_cli(capsys, "check", "--backends", "numpy")[0] == 0


def test_check_refuses_an_unknown_fastnn_backend(capsys, monkeypatch):
    monkeypatch.setenv("FASTNN_BACKEND", "tensorflow")
    status, out, err = run_cli(capsys, "check")
    assert status == 2 and out == ""
    assert one_error_line(err) == ("fastnn: error: FASTNN_BACKEND='tensorflow' is not a fastnn "
                                   "backend; valid names: numpy, numba, cupy")


def test_check_fails_on_a_wrong_gradient(capsys, monkeypatch):
    numpy_backend = backends.load("numpy")
    good = numpy_backend.ops.dense_backward

    def off_by_a_bit(X, W, dZ, need_dx):
        dW, dX = good(X, W, dZ, need_dx)
        return dW * 1.001, dX

    monkeypatch.setattr(numpy_backend.ops, "dense_backward", off_by_a_bit)
    status, out, _ = run_cli(capsys, "check", "--backends", "numpy")
    assert status == 1
    assert out.count("FAIL") == CASES
    assert out.splitlines()[-1] == f"{CASES} of {CASES} checks failed"


class SlightlyOffAdam(NumpyBackend):
    """Right gradients, but an Adam update 1% too large: only parity can tell."""

    name = "off"

    def __init__(self):
        super().__init__()
        good = self.ops.adam_update

        def adam_update(p, g, m, v, lr, *rest):
            return good(p, g, m, v, lr * 1.01, *rest)

        self.ops.adam_update = adam_update


def test_parity_catches_a_backend_that_trains_differently():
    rows = [r for r in check.check(["numpy", SlightlyOffAdam()]) if r["backend"] == "off"]
    assert len(rows) == CASES
    assert all(r["gradcheck"] < 1e-6 for r in rows)
    assert all(r["parity"] > 1 and r["result"] == "FAIL" for r in rows)


class Crashing(NumpyBackend):
    """A backend whose forward pass fails, as a broken GPU driver would."""

    name = "crashing"

    def __init__(self):
        super().__init__()

        def dense_forward(*args):
            raise RuntimeError("cudaErrorLaunchFailure")

        self.ops.dense_forward = dense_forward


def test_a_crashing_backend_fails_its_rows_and_the_table_goes_on(capsys):
    rows = check.check([Crashing(), "numpy"])
    crashed = [r for r in rows if r["backend"] == "crashing"]
    assert len(crashed) == CASES and all(r["result"] == "FAIL" for r in crashed)
    assert crashed[0]["note"] == "RuntimeError: cudaErrorLaunchFailure"
    assert all(r["result"] == "pass" for r in rows if r["backend"] == "numpy")
    check.print_table(rows)
    out = capsys.readouterr().out
    assert "FAIL: RuntimeError: cudaErrorLaunchFailure" in out


@pytest.mark.skipif(array_api_strict is None, reason="array-api-strict is not installed")
def test_parity_holds_on_another_array_namespace():
    rows = [r for r in check.check([StrictBackend()]) if r["backend"] == "strict"]
    assert len(rows) == CASES
    assert all(r["result"] == "pass" and r["parity"] <= 1 for r in rows)


# --- the installed entry point --------------------------------------------------------------


def entry_point():
    path = Path(sys.executable).with_name("fastnn")
    assert path.exists(), f"the fastnn command is not installed next to {sys.executable}; " \
                          f"pip install -e ."
    return str(path)


def test_entry_point_runs_and_reports_errors_in_one_line(tmp_path):
    env = {**os.environ, "FASTNN_BACKEND": "bogus"}
    run = subprocess.run([entry_point(), "train", "--dataset", "xor", "--epochs", "3"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == ("fastnn: error: FASTNN_BACKEND='bogus' is not a fastnn backend; "
                          "valid names: numpy, numba, cupy\n")
    run = subprocess.run([entry_point(), "train", "--dataset", "xor", "--epochs", "3",
                          "--backend", "numpy", "--out", "out"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "epoch 3/3" in run.stdout and (tmp_path / "out" / "decision_boundary.png").exists()


def hiding(package, tmp_path):
    """The environment of a Python that cannot import ``package``, as if it were not
    installed: a sitecustomize on PYTHONPATH blocks it when the interpreter starts."""
    folder = tmp_path / f"without-{package}"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(f"import sys\nsys.modules[{package!r}] = None\n")
    return {**os.environ, "PYTHONPATH": str(folder)}


UNUSABLE = {
    "tensorflow": "FASTNN_BACKEND='tensorflow' is not a fastnn backend; valid names: numpy, "
                  "numba, cupy",
    "numba": "the 'numba' backend needs the numba package, which is not installed here; "
             "install it with: pip install 'fastnn[numba]'",
}


@pytest.mark.parametrize("program", ["python -m fastnn", "fastnn check"])
@pytest.mark.parametrize("value", list(UNUSABLE))
def test_front_door_reports_an_unusable_fastnn_backend_in_one_line(tmp_path, program, value):
    """The README's main command and ``fastnn check``: one line with the fix, exit 2 (for
    numba, on a Python where Numba is not installed)."""
    env = {**hiding("numba", tmp_path), "FASTNN_BACKEND": value}
    argv = [sys.executable, "-m", "fastnn"] if program.startswith("python") else \
        [entry_point(), "check"]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"fastnn: error: {UNUSABLE[value]}\n"


def test_other_programs_importing_fastnn_still_get_the_exception(tmp_path):
    """Only the fastnn programs turn a bad FASTNN_BACKEND into one line: ``python -m``
    of another module (here one inside fastnn) gets the library's exception."""
    env = {**os.environ, "FASTNN_BACKEND": "tensorflow"}
    run = subprocess.run([sys.executable, "-m", "fastnn.data"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == f"ValueError: {UNUSABLE['tensorflow']}"


@pytest.mark.parametrize("rank", ["0", "1"])
def test_train_under_mpiexec_without_distributed_is_refused(capsys, monkeypatch, tmp_path, rank):
    """mpiexec -n 2 fastnn train ... without --distributed would train one copy per rank,
    all writing the same --out: rank 0 says so in one line, the others end quietly, each
    with status 2 and before loading anything. FASTNN_MPI_GUARD=0 (independent runs under
    mpiexec, as docs/distributed.md has it) lets it run."""
    monkeypatch.setenv("PMI_RANK", rank)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.delenv("FASTNN_MPI_RANK_PID", raising=False)
    argv = ("train", "--dataset", "xor", "--epochs", 1, "--quiet", "--no-plots")
    status, out, err = run_cli(capsys, *argv, "--out", tmp_path / "run")
    assert status == 2 and out == "" and not (tmp_path / "run").exists()
    if rank == "0":
        line = one_error_line(err)
        assert "fastnn train is rank 0 of 2 of an MPI launch without --distributed" in line
        assert "add --distributed" in line and "FASTNN_MPI_GUARD=0" in line
    else:
        assert err == ""
    monkeypatch.setenv("FASTNN_MPI_GUARD", "0")
    assert run_cli(capsys, *argv)[0] == 0


def test_train_in_a_launch_of_unknown_size_runs(capsys, monkeypatch):
    """srun --mpi=pmix names the rank (PMIX_RANK) but not the size, which may be 1 (a
    one-task job): fastnn train is not refused there."""
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "MV2_COMM_WORLD_SIZE", "FASTNN_MPI_RANK_PID", "FASTNN_MPI_GUARD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMIX_RANK", "0")
    assert run_cli(capsys, "train", "--dataset", "xor", "--epochs", 1, "--quiet")[0] == 0
