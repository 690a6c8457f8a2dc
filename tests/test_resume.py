"""Resuming: training interrupted by a checkpoint continues exactly as if it never
stopped, because each epoch's randomness comes from (seed, global epoch number)."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import host, make_backend

import fastnn
from fastnn import BatchNorm, Dense, Dropout, Sequential, datasets

X, Y = datasets.blobs(200, n_classes=3, std=1.5, seed=0)
FIT = {"batch_size": 32, "shuffle": True}


def model(backend=None, dtype="float32", seed=5):
    layers = [Dense(2, 12, "relu"), BatchNorm(12), Dropout(0.3), Dense(12, 3, "softmax")]
    return Sequential(layers, dtype=dtype, seed=seed, backend=backend)


def arrays(m):
    out = [host(m.backend, p.value) for p in m.parameters() + m.buffers()]
    return out + [host(m.backend, a) for s in m.optimizer.state for a in s]


def assert_identical(a, b, exact):
    for x, y in zip(arrays(a), arrays(b), strict=True):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer, schedule", [
    ("adam", None), ("momentum", None), ("adam", fastnn.StepDecay(1, 0.7)),
    ("momentum", fastnn.CosineDecay(4, min_lr=0.001)),
], ids=["adam", "momentum", "adam-step", "momentum-cosine"])
def test_two_plus_two_epochs_equal_four(backend, tmp_path, optimizer, schedule):
    """Bitwise on NumPy and the strict stand-in, with shuffling, dropout, BatchNorm and
    the optimizer's state; a schedule continues where it was."""
    straight = model()
    whole = straight.fit(X, Y, epochs=4, optimizer=optimizer, lr=0.05, seed=9,
                         lr_schedule=schedule, **FIT)
    first = model()
    first.fit(X, Y, epochs=2, optimizer=optimizer, lr=0.05, seed=9, lr_schedule=schedule, **FIT)
    first.save(tmp_path / "half.npz")
    resumed = fastnn.load(tmp_path / "half.npz")
    rest = resumed.fit(X, Y, epochs=2, **FIT)  # optimizer, schedule and seed come along
    assert resumed.epochs_trained == straight.epochs_trained == 4
    assert resumed.optimizer.t == straight.optimizer.t
    assert resumed.optimizer.lr == straight.optimizer.lr
    exact = backend.name in ("numpy", "strict")
    assert_identical(straight, resumed, exact)
    np.testing.assert_allclose(rest["loss"], whole["loss"][2:], rtol=0 if exact else 1e-6)


@pytest.mark.parametrize("target", ["numpy", "strict"])
def test_resume_on_another_backend(backend, tmp_path, target):
    straight = model(backend="numpy", dtype="float64")
    straight.fit(X, Y, epochs=4, optimizer="adam", lr=0.01, seed=1, **FIT)
    first = model(dtype="float64")
    first.fit(X, Y, epochs=2, optimizer="adam", lr=0.01, seed=1, **FIT)
    first.save(tmp_path / "half.npz")
    resumed = fastnn.load(tmp_path / "half.npz", backend=make_backend(target))
    resumed.fit(X, Y, epochs=2, **FIT)
    assert_identical(straight, resumed, exact=False)


def test_a_second_fit_continues_the_random_streams(monkeypatch):
    """fit() twice draws new shuffles and masks for the new epochs instead of replaying
    the first call's, and equals one fit over both epochs."""
    backend = fastnn.get_backend()
    seeds = []
    real_rng = type(backend).rng

    def recording_rng(self, seed=None):
        seeds.append(list(seed) if isinstance(seed, list) else seed)
        return real_rng(self, seed)

    twice = model()
    monkeypatch.setattr(type(backend), "rng", recording_rng)
    twice.fit(X, Y, epochs=1, optimizer="adam", **FIT)
    twice.fit(X, Y, epochs=1, **FIT)
    # [seed, stream, epoch]: the model seed 5; dropout (layer 2) uses stream 3, shuffle 0
    assert seeds == [[5, 3, 1], [5, 0, 1], [5, 3, 2], [5, 0, 2]]
    once = model()
    once.fit(X, Y, epochs=2, optimizer="adam", **FIT)
    assert_identical(twice, once, exact=True)


def test_an_unseeded_model_resumes_exactly(tmp_path):
    first = model(seed=None)
    first.fit(X, Y, epochs=2, optimizer="adam", **FIT)
    assert isinstance(first.train_seed, int) and first.train_seed >= 0
    first.save(tmp_path / "m.npz")
    twin = fastnn.load(tmp_path / "m.npz")
    first.fit(X, Y, epochs=2, **FIT)
    twin.fit(X, Y, epochs=2, **FIT)
    assert twin.train_seed == first.train_seed
    assert_identical(first, twin, exact=True)


def test_different_seeds_train_differently():
    a, b = model(), model()
    a.fit(X, Y, epochs=1, seed=1, **FIT)
    b.fit(X, Y, epochs=1, seed=2, **FIT)
    assert not np.array_equal(a.layers[0].W.value, b.layers[0].W.value)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        model().fit(X, Y, seed=seed)


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    """The example of docs/guide/checkpoints.md, as written."""
    page = Path(__file__).resolve().parent.parent / "docs" / "guide" / "checkpoints.md"
    code = re.search(r"```python\n(.*?)```", page.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(page), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "40"
    stopped, best = (int(v) for v in printed[1].split()[:2])
    assert 0 < best < stopped < 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "spirals.npz"]
