"""What a workload becomes on one backend (a ``Case``), and the pieces of work that
fastnn and PyTorch both run through their own matmul."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Case:
    """A workload set up on one backend or peer.

    ``step()`` runs it once: the part that is timed (no synchronisation inside).
    ``result()`` returns its outputs as float64 NumPy arrays: not timed.
    """

    step: Callable[[], object]
    result: Callable[[], list]


def pure_case(run, to_host):
    """A Case for a function without side effects: ``run()`` returns an array or a tuple
    of arrays; ``result()`` converts the last call's output with ``to_host``."""
    last = []

    def step():
        last.clear()  # free the previous output first, as a caller that drops it would
        last.append(run())

    def result():
        out = last[0] if isinstance(last[0], tuple) else (last[0],)
        return [np.asarray(to_host(x), dtype=np.float64) for x in out]

    return Case(step, result)


def mlp_gemms(matmul, X, W1, W2, W3, H1, H2, D1, D2, D3):
    """The 8 matmuls of one forward + backward pass of a 3-layer MLP: 3 forward,
    3 weight gradients, and the 2 input gradients the first layer does not need."""
    return (
        matmul(X, W1), matmul(H1, W2), matmul(H2, W3),
        matmul(X.T, D1), matmul(H1.T, D2), matmul(H2.T, D3),
        matmul(D3, W3.T), matmul(D2, W2.T),
    )


def dense_products(matmul, X, W, dA):
    """A dense layer's three products: X @ W, X^T @ dA and dA @ W^T."""
    return (matmul(X, W), matmul(X.T, dA), matmul(dA, W.T))


GEMM_INPUTS = ("X", "W1", "W2", "W3", "H1", "H2", "D1", "D2", "D3")
