"""A counter-based random generator that runs on the device with xp integer ops.

Sample i of a stream is ``splitmix64(key + (i + 1) * GAMMA)`` in uint64 arithmetic
with wraparound, so any xp (NumPy, CuPy, array-api-strict) produces the same bits
for the same seed: a model trained with shuffling and dropout gets the same masks
and batch orders on every backend. Nothing is drawn on the host and nothing is
copied: the generator's only state is a Python int (the counter), and the key
comes from the seed through NumPy's SeedSequence once, when the stream is made.

uniform: the top 24 (float32) or 53 (float64) bits scaled by 2**-24 / 2**-53, exact
floats in [0, 1). permutation: a stable argsort of random uint64 keys.
"""

import math

import numpy as np

GAMMA = 0x9E3779B97F4A7C15  # the golden-ratio increment of SplitMix64
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def stream_key(seed):
    """The 64-bit key of the stream for ``seed`` (None: fresh OS entropy)."""
    if not _valid_seed(seed):
        raise TypeError(
            f"seed must be None, a non-negative int or a sequence of non-negative ints; "
            f"got {seed!r}"
        )
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])


def _valid_seed(seed):
    def word(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0

    if seed is None or word(seed):
        return True
    return isinstance(seed, (list, tuple)) and len(seed) > 0 and all(word(v) for v in seed)


class CounterRNG:
    """Seeded random arrays on ``backend``'s device; the same numbers on every backend."""

    def __init__(self, backend, seed=None):
        self.backend = backend
        self.key = stream_key(seed)
        self.counter = 0  # how many 64-bit samples this stream has used

    def bits(self, n):
        """The next ``n`` random uint64 values as a 1-D device array."""
        xp = self.backend.xp
        z = xp.arange(n, dtype=xp.uint64, device=self.backend.device)
        z += self.counter + 1
        z *= GAMMA
        z += self.key
        z ^= z >> 30
        z *= MIX1
        z ^= z >> 27
        z *= MIX2
        z ^= z >> 31
        self.counter += n
        return z

    def uniform(self, shape, dtype):
        """Uniform [0, 1) samples of ``shape`` as a device array of ``dtype``."""
        xp = self.backend.xp
        shape = tuple(shape)
        bits = self.bits(math.prod(shape))
        if dtype == xp.float64:
            out = xp.astype(bits >> 11, xp.float64) * 2.0**-53
        else:
            out = xp.astype(xp.astype(bits >> 40, xp.float32) * 2.0**-24, dtype)
        return xp.reshape(out, shape)

    def permutation(self, n):
        """A random permutation of ``range(n)`` as a device index array."""
        return self.backend.xp.argsort(self.bits(n), stable=True)
