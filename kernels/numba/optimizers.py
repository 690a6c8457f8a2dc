"""Optimizer updates, each one pass over a parameter and its state, in place.

Every update is written once over flat arrays: ``rules(MASK)`` is the serial kernel
built for the rules in ``MASK`` (a bit mask, as for activation kinds: the other rules'
loops are pruned before typing), ``update`` the build for every rule, ``update_for``
the way kernels reach a build, and ``update_parallel`` splits ``update`` across threads
(``prange`` over chunks) for large parameters. ``hp`` is the tuple of floats that
``kernels/hyper.py`` lays out, (lr, weight_decay, h1, ..., h7), the h's of each rule
named there (and in the comments below); each is cast to the parameter's dtype first,
so the arithmetic rounds like the NumPy reference's float32.
"""

import functools
import math

from numba import prange

from .. import hyper
from .jit import by_constant, flat, kernel, mask, members, sole
from .math import typed_as

RULES = {name: code for code, name in enumerate(hyper.RULES)}  # the kernels' rule codes
SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADAM = (
    RULES[name] for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"))
EVERY_RULE = mask(*RULES.values())


@functools.cache
def rules(MASK):
    """``update`` built for the rules in ``MASK``, branch by branch as
    ``activations.blocks`` builds its loops; a rule outside the build does
    nothing."""
    IN, SOLE = members(MASK), sole(MASK)

    @kernel(build=(MASK,))
    def update(rule, p, g, s1, s2, hp):
        """One rule over flat arrays (g + weight_decay * p is the decayed gradient). Loops
        count from 0 so indices skip Numba's negative-index check and vectorize."""
        n = p.shape[0]
        lr, wd = typed_as(p, hp[0]), typed_as(p, hp[1])
        h1, h2, h3 = typed_as(p, hp[2]), typed_as(p, hp[3]), typed_as(p, hp[4])
        h4, h5 = typed_as(p, hp[5]), typed_as(p, hp[6])
        h6, h7 = typed_as(p, hp[7]), typed_as(p, hp[8])
        if SGD == SOLE or SGD in IN and rule == SGD:
            for i in range(n):
                p[i] -= lr * (g[i] + wd * p[i])
        elif MOMENTUM == SOLE or MOMENTUM in IN and rule == MOMENTUM:  # h1 = momentum
            for i in range(n):
                v = s1[i] * h1 - lr * (g[i] + wd * p[i])
                s1[i] = v
                p[i] += v
        elif NESTEROV == SOLE or NESTEROV in IN and rule == NESTEROV:  # h1 = momentum
            for i in range(n):
                step = lr * (g[i] + wd * p[i])
                v = s1[i] * h1 - step
                s1[i] = v
                p[i] += h1 * v - step
        elif ADAGRAD == SOLE or ADAGRAD in IN and rule == ADAGRAD:  # h1 = eps
            for i in range(n):
                gi = g[i] + wd * p[i]
                h = s1[i] + gi * gi
                s1[i] = h
                p[i] -= lr * gi / (math.sqrt(h) + h1)
        elif RMSPROP == SOLE or RMSPROP in IN and rule == RMSPROP:
            # h1 = rho, h2 = rho2 (1 - rho), h3 = eps
            for i in range(n):
                gi = g[i] + wd * p[i]
                h = s1[i] * h1 + h2 * (gi * gi)
                s1[i] = h
                p[i] -= lr * gi / (math.sqrt(h) + h3)
        elif ADAM == SOLE or ADAM in IN and rule == ADAM:
            # h1, h2 = beta1, beta1c (1 - beta1); h3, h4 = beta2, beta2c; h5 = eps;
            # h6, h7 = fix1, fix2 (1 - beta1**t, 1 - beta2**t: bias corrections at step t)
            for i in range(n):
                gi = g[i] + wd * p[i]
                m = s1[i] * h1 + h2 * gi
                v = s2[i] * h3 + h4 * (gi * gi)
                s1[i] = m
                s2[i] = v
                p[i] -= lr * (m / h6) / (math.sqrt(v / h7) + h5)

    return update


update = rules(EVERY_RULE)  # for any rule
update_for = by_constant(rules)  # update_for(MASK, rule, p, ...) from kernels of constant MASK


@kernel(parallel=True)
def update_parallel(rule, p, g, s1, s2, hp, chunks):
    p, g, s1, s2 = flat(p), flat(g), flat(s1), flat(s2)
    n = p.shape[0]
    for c in prange(chunks):
        lo, hi = c * n // chunks, (c + 1) * n // chunks
        update(rule, p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi], hp)
