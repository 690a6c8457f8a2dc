"""The optimizer hyper-parameters as the accelerated kernels take them: one layout for
the Numba kernels' ``hp`` tuple and the CUDA kernels' scalar arguments.

``hp`` is ``SIZE`` floats: (lr, weight_decay, h1, ..., h7), the h's of each rule named
in ``LAYOUT`` in that order, unused ones 0. Some are derived from the optimizer's
settings (``DERIVED``): the complements 1 - rho and 1 - beta, computed once on the host
as the NumPy reference computes them, and Adam's bias corrections at step t. The Numba
kernels read the h's by position (``hp(...)``, ``slot``); the CUDA kernels name their
scalar parameters after the slots and take them by name (``values``).
"""

RULES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")  # codes: their index
LAYOUT = {
    "sgd": (),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adagrad": ("eps",),
    "rmsprop": ("rho", "rho2", "eps"),
    "adam": ("beta1", "beta1c", "beta2", "beta2c", "eps", "fix1", "fix2"),
}
DERIVED = {  # slot: (what it is, how it is computed from the settings s at step t)
    "rho2": ("1 - rho", lambda s, t: 1.0 - s["rho"]),
    "beta1c": ("1 - beta1", lambda s, t: 1.0 - s["beta1"]),
    "beta2c": ("1 - beta2", lambda s, t: 1.0 - s["beta2"]),
    "fix1": ("1 - beta1**t, Adam's bias correction", lambda s, t: 1.0 - s["beta1"] ** t),
    "fix2": ("1 - beta2**t, Adam's bias correction", lambda s, t: 1.0 - s["beta2"] ** t),
}
HEAD = ("lr", "weight_decay")
SIZE = len(HEAD) + max(len(names) for names in LAYOUT.values())


def names(rule):
    """The names of the ``hp`` slots that ``rule`` uses, in order."""
    return HEAD + LAYOUT[rule]


def slot(rule, name):
    """The position of ``name`` in ``rule``'s ``hp``."""
    return names(rule).index(name)


def values(rule, settings, t=1):
    """``{slot name: float}`` of ``rule`` from the optimizer's ``settings`` (a mapping
    by name: lr, weight_decay and the rule's own), at step ``t`` (Adam's corrections)."""
    return {name: float(DERIVED[name][1](settings, t) if name in DERIVED else settings[name])
            for name in names(rule)}


def hp(rule, settings, t=1):
    """The ``SIZE``-float tuple of ``rule`` (see the module docstring); floats
    throughout, so every call shares one compiled specialization."""
    used = tuple(values(rule, settings, t).values())
    return used + (0.0,) * (SIZE - len(used))
