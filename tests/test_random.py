"""The counter-based RNG: SplitMix64 bits computed with xp integer ops, the same on
every backend, so shuffling and dropout do not depend on where a model runs."""

import numpy as np
import pytest

from fastnn import backends
from fastnn.random import CounterRNG, stream_key

MASK = 2**64 - 1


def splitmix64(key, i):
    """Sample i of the stream, from the published SplitMix64 algorithm in plain Python."""
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def host_bits(backend, rng, n):
    return [int(v) for v in backend.to_numpy(rng.bits(n)).tolist()]


def test_bits_are_splitmix64_of_the_counter(backend):
    rng = backend.rng(7)
    key = stream_key(7)
    assert host_bits(backend, rng, 5) == [splitmix64(key, i) for i in range(5)]
    assert host_bits(backend, rng, 3) == [splitmix64(key, i) for i in range(5, 8)]  # continues
    assert rng.counter == 8


def test_same_seed_same_numbers_on_every_backend(backend):
    reference = backends.load("numpy")
    for dtype in ("float32", "float64"):
        a, b = backend.rng([3, 1]), reference.rng([3, 1])
        u = backend.to_numpy(a.uniform((40, 7), backend.dtype(dtype)))
        np.testing.assert_array_equal(u, b.uniform((40, 7), reference.dtype(dtype)))
        assert u.dtype == np.dtype(dtype) and u.shape == (40, 7)
        np.testing.assert_array_equal(backend.to_numpy(a.permutation(50)), b.permutation(50))


def test_uniform_is_in_the_unit_interval_and_uniform(backend):
    for dtype in ("float32", "float64"):
        u = backend.to_numpy(backend.rng(0).uniform((200, 100), backend.dtype(dtype)))
        assert u.min() >= 0.0 and u.max() < 1.0
        assert abs(u.mean() - 0.5) < 0.005  # 20,000 draws: sd of the mean 0.002
        counts, _ = np.histogram(u, bins=10, range=(0, 1))
        assert counts.min() > 1800 and counts.max() < 2200  # 2000 +- 4.5 sd


def test_float32_keeps_24_bits_and_float64_53():
    numpy = backends.load("numpy")
    u32 = numpy.rng(1).uniform((1000,), np.float32).astype(np.float64)
    u64 = numpy.rng(1).uniform((1000,), np.float64)
    np.testing.assert_array_equal(u32 * 2**24, np.floor(u32 * 2**24))
    np.testing.assert_array_equal(u64 * 2**53, np.floor(u64 * 2**53))
    assert np.all(np.abs(u32 - u64) < 2**-24)  # both from the same top bits


def test_permutation_is_a_permutation_and_depends_on_the_seed(backend):
    p = backend.to_numpy(backend.rng(5).permutation(1000))
    np.testing.assert_array_equal(np.sort(p), np.arange(1000))
    q = backend.to_numpy(backend.rng(6).permutation(1000))
    assert not np.array_equal(p, q) and not np.array_equal(p, np.arange(1000))


def test_streams_differ_by_seed_and_none_draws_fresh_entropy():
    numpy = backends.load("numpy")
    draws = [numpy.rng(s).uniform((8,), np.float64) for s in (0, 1, [0, 1], [0, 2])]
    for i in range(len(draws)):
        for j in range(i):
            assert not np.array_equal(draws[i], draws[j])
    assert not np.array_equal(numpy.rng().uniform((8,), np.float64),
                              numpy.rng().uniform((8,), np.float64))


@pytest.mark.parametrize("seed", [-1, 1.5, "3", [1, -2], [], True])
def test_bad_seeds_are_refused_with_the_accepted_kinds(seed):
    with pytest.raises(TypeError, match="seed must be None, a non-negative int or a sequence"):
        CounterRNG(backends.load("numpy"), seed)


def test_draws_make_no_host_transfers(backend):
    rng = backend.rng(3)
    with backend.count_transfers() as counted:
        rng.uniform((64, 32), backend.dtype("float32"))
        rng.permutation(100)
    assert (counted.to_device, counted.to_host) == (0, 0)
