"""``python -m fastnn``: train the tutorials' two classic networks on the current
backend and print what they reach.

1. The planar "flower": a 2-4-1 tanh/sigmoid net, randn*0.01 init, full-batch
   gradient descent, lr 1.2, 10,000 iterations (the course reports about 90%).
2. make_moons (1000 samples, noise 0.2, 10% held out): the nn_architecture net
   2-25-50-50-25-1 with ReLU and a sigmoid output, trained with Adam.
3. The shipped 8x8 digits as images (a quarter held out): a small CNN, Saito's
   SimpleConvNet with 'same' padding (conv 30x5x5, 2x2 max pool, Dense 100), Adam.
"""

import argparse
import sys
import time

import fastnn
from fastnn import backends, datasets, initializers, presets
from fastnn.cli import fail
from fastnn.data import train_test_split
from fastnn.errors import BackendUnavailable

MOONS_ARCHITECTURE = [
    {"input_dim": 2, "output_dim": 25, "activation": "relu"},
    {"input_dim": 25, "output_dim": 50, "activation": "relu"},
    {"input_dim": 50, "output_dim": 50, "activation": "relu"},
    {"input_dim": 50, "output_dim": 25, "activation": "relu"},
    {"input_dim": 25, "output_dim": 1, "activation": "sigmoid"},
]


def train_planar(iterations=10_000, seed=2):
    X, y = datasets.planar()
    model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid",
                                   init=initializers.normal(0.01), seed=seed)
    model.fit(X, y, epochs=iterations, lr=1.2)
    return model, model.evaluate(X, y)


def train_moons(epochs=300, seed=0):
    X, y = datasets.moons(1000, noise=0.2, seed=seed)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.1, seed=seed)
    model = fastnn.from_architecture(MOONS_ARCHITECTURE, seed=seed)
    model.fit(X_train, y_train, epochs=epochs, batch_size=64, optimizer="adam", lr=0.003)
    return model, model.evaluate(X_test, y_test)


DIGITS_CNN = "conv30x5same-maxpool2-dense100"  # a fastnn.presets spec


def train_digits_cnn(epochs=15, seed=0, backend=None):
    X, y = datasets.digits(images=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=seed)
    model = presets.cnn(DIGITS_CNN, X.shape[1:], 10, seed=seed, backend=backend)
    model.fit(X_train, y_train, epochs=epochs, batch_size=32, optimizer="adam", lr=0.003,
              seed=seed)
    return model, model.evaluate(X_test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10_000,
                        help="planar training iterations (default 10000)")
    args = parser.parse_args(argv)
    try:  # importing fastnn left a bad FASTNN_BACKEND for this line to report
        backend = backends.get_backend() or backends.select_from_environment()
    except (ValueError, BackendUnavailable) as error:
        return fail(error, 2)
    print(f"fastnn {fastnn.__version__} on the {backend.name!r} backend (float32)")
    start = time.perf_counter()
    _, result = train_planar(args.iterations)
    print(f"planar flower, 2-4-1 tanh/sigmoid, full batch, lr 1.2, {args.iterations} iterations: "
          f"training accuracy {result['accuracy']:.1%} (loss {result['loss']:.4f}) "
          f"in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    _, result = train_moons()
    print(f"moons, 2-25-50-50-25-1 relu/sigmoid, adam, 300 epochs: "
          f"test accuracy {result['accuracy']:.1%} (loss {result['loss']:.4f}) "
          f"in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    _, result = train_digits_cnn()
    print(f"digits 8x8 images, CNN {DIGITS_CNN}, adam, 15 epochs: "
          f"test accuracy {result['accuracy']:.1%} (loss {result['loss']:.4f}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
