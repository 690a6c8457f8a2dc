"""``fastnn check``: gradient checks and cross-backend parity on this machine.

For the backend FASTNN_BACKEND names (every backend that can run here when it is unset)
and a set of small models (each trainable hidden activation; each loss with its output
layer; a CNN of conv and pooling layers): backprop against float64 central
differences (``fastnn.gradcheck``), and a few Adam steps in float64 compared with the
NumPy reference backend. Prints a pass/fail table; exit status 1 if anything fails.
"""

import os

import numpy as np

import fastnn
from fastnn import (
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Sequential,
    activations,
    backends,
)
from fastnn.errors import BackendUnavailable

PARITY_RTOL = 1e-7  # float64 steps on two backends differ by round-off only
PARITY_ATOL = 1e-10


def _cases():
    """(case name, layers, loss, X, targets): a Dense net 3-5-4-n on fixed inputs X
    (12, 3) for each hidden activation and each loss (the configurations
    tests/test_gradcheck.py also proves), and a CNN on fixed images (6, 2, 6, 6).
    ``layers()`` gives a new list of the case's layers."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(12, 3))
    binary = (rng.random(12) > 0.5).astype(int)

    def dense(hidden, output, n_out):
        return lambda: [Dense(3, 5, hidden), Dense(5, 4, hidden), Dense(4, n_out, output)]

    cases = [(f"hidden {h}", dense(h, "sigmoid", 1), "binary_crossentropy", X, binary)
             for h in activations.trainable() if activations.TABLE[h].elementwise]
    cases += [
        ("loss categorical_crossentropy", dense("tanh", "softmax", 3),
         "categorical_crossentropy", X, rng.integers(0, 3, 12)),
        ("loss mse", dense("tanh", "identity", 2), "mse", X, rng.normal(size=(12, 2))),
        ("loss mae", dense("tanh", "tanh", 2), "mae", X, rng.normal(size=(12, 2)) * 3),
        ("loss huber", dense("tanh", "identity", 2), "huber", X,
         rng.normal(size=(12, 2)) * 3),
    ]
    # images on which no ReLU input and no gap between a pooling window's two largest
    # values comes within 40 eps of 0 (a kink, where central differences fail)
    pixels = np.random.default_rng(2)
    images = pixels.normal(size=(6, 2, 6, 6))
    cases.append(("conv Conv2D+MaxPool2D+AvgPool2D", lambda: [
        Conv2D(2, 3, 3, padding=1, activation="tanh"), MaxPool2D(2),  # 6x6 -> 3x3
        Conv2D(3, 4, 2, activation="relu"), AvgPool2D(2), Flatten(),  # 2x2 -> 1x1
        Dense(4, 3, "softmax")], "categorical_crossentropy", images, pixels.integers(0, 3, 6)))
    return cases


def add_parser(commands):
    parser = commands.add_parser(
        "check", help="run gradient checks and cross-backend parity; print a pass/fail table",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--backends", metavar="NAMES",
                        help="comma-separated backends to check (default: the one "
                             "FASTNN_BACKEND names, else every one that can run here; a named "
                             "one that cannot run is an error)")
    parser.set_defaults(run=run)


def run(args):
    rows = check(chosen_backends(args.backends))
    print_table(rows)
    failed = sum(row["result"] == "FAIL" for row in rows)
    print(f"{failed} of {sum(row['result'] != 'skipped' for row in rows)} checks failed"
          if failed else "all checks passed")
    return 1 if failed else 0


def chosen_backends(option):
    """The backends to check: those --backends names, else the one FASTNN_BACKEND names,
    else all. A backend asked for by name that cannot run here is an error."""
    if option is None and not os.environ.get(backends.ENV_VAR, "").strip():
        return list(backends.NAMES)  # each one that cannot run gets a 'skipped' row
    if option is None:
        source, names = backends.ENV_VAR, [os.environ[backends.ENV_VAR]]
    else:
        source, names = "--backends", [n for n in option.split(",") if n.strip()]
        if not names:
            raise ValueError("--backends needs at least one name, e.g. --backends numpy,numba")
    chosen = [backends.canonical_name(n, source=source) for n in names]
    for name in chosen:
        backends.load(name)
    return chosen


def check(chosen):
    """One row per (backend, case): gradcheck error, parity difference, result. A backend
    that cannot run here gives one 'skipped' row with the reason. ``chosen`` holds
    backend names or Backend objects."""
    cases = _cases()
    reference = backends.load("numpy")
    rows = []
    for item in chosen:
        try:
            backend = backends.load(item)
        except BackendUnavailable as error:
            rows.append({"backend": item, "case": "-", "gradcheck": None, "parity": None,
                         "result": "skipped", "note": str(error)})
            continue
        for name, layers, loss, X, y in cases:
            spec = (layers, loss, X.shape[1:])
            rows.append({"backend": backend.name, "case": name,
                         **_check_case(backend, reference, spec, X, y)})
    return rows


def _check_case(backend, reference, spec, X, y):
    try:
        grad = fastnn.gradcheck(_model(backend, *spec), X, y)
        parity = None if backend is reference else _parity(backend, reference, spec, X, y)
    except Exception as error:  # a backend that crashes fails its row; the others still run
        return {"gradcheck": None, "parity": None, "result": "FAIL",
                "note": f"{type(error).__name__}: {error}"}
    ok = grad.passed and (parity is None or parity <= 1.0)
    return {"gradcheck": grad.max_rel_error, "parity": parity,
            "result": "pass" if ok else "FAIL", "note": None}


def _model(backend, layers, loss, input_shape, dtype="float64"):
    return Sequential(layers(), loss=loss, dtype=dtype, seed=3, backend=backend,
                      input_shape=input_shape)


def _parity(backend, reference, spec, X, y):
    """The largest parameter difference after 3 epochs of Adam (batches of 4, shuffled),
    in units of the tolerance: at most 1 passes."""
    trained = []
    for target in (reference, backend):
        model = _model(target, *spec)
        model.fit(X, y, epochs=3, batch_size=4, optimizer="adam", lr=0.01, seed=0)
        trained.append([target.to_numpy(p.value) for p in model.parameters()])
    return max(float(np.max(np.abs(b - a) / (PARITY_ATOL + PARITY_RTOL * np.abs(a))))
               for a, b in zip(*trained))


def print_table(rows):
    header = ("backend", "case", "gradcheck error", "parity vs numpy", "result")
    lines = [header]
    for row in rows:
        grad = "-" if row["gradcheck"] is None else f"{row['gradcheck']:.1e}"
        if row["result"] == "skipped" or row["note"]:
            parity = "-"
        elif row["parity"] is None:
            parity = "reference"
        else:
            parity = f"{row['parity']:.2g} tol"
        result = row["result"] + (f": {row['note']}" if row["note"] else "")
        lines.append((row["backend"], row["case"], grad, parity, result))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])

