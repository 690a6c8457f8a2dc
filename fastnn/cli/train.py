"""``fastnn train``: train a network on a dataset and write its history, metrics and plots.

The data is split (seeded) into training and test parts; the test part is also
evaluated after every epoch (the ``val_`` curves). ``--out DIR`` receives
history.csv, history.json, metrics.json, learning_curves.png and, for 2-D
classification data, decision_boundary.png.
"""

import argparse
import csv
import importlib.util
import inspect
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastnn
from fastnn import backends, datasets, optimizers, presets
from fastnn.data import standardize, train_test_split
from fastnn.distributed import DataParallel, guard
from fastnn.errors import DistributedError, TrainingDiverged
from fastnn.names import lookup, normalize

BUILTIN = {f.__name__: f for f in (*datasets.GENERATED, datasets.digits)}
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist")  # those that can give images
FILE_DATASETS = {"mnist": "DIR", "fashion_mnist": "DIR", "csv": "PATH"}
OPTIMIZER_SETTINGS = ("momentum", "beta1", "beta2", "rho", "eps", "weight_decay")
DEFAULT_TEST_SIZE = 0.2
SIZES = re.compile(r"\d+(-\d+)+")
OUTPUT_FILES = ("history.csv", "history.json", "metrics.json", "model.npz",
                "learning_curves.png", "decision_boundary.png")


def add_parser(commands):
    parser = commands.add_parser(
        "train", help="train a network on a dataset; write history, metrics and plots",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="planar", metavar="NAME",
                      help=f"{', '.join(BUILTIN)}, mnist:DIR (MNIST or Fashion-MNIST IDX files) "
                           f"or csv:PATH (default planar)")
    data.add_argument("--n-samples", type=_positive(int), help="samples of a generated dataset")
    data.add_argument("--noise", type=float, help="noise of a generated dataset")
    data.add_argument("--data-seed", type=int,
                      help="seed of a generated dataset (default: --seed; planar keeps the "
                           "course's data)")
    data.add_argument("--label",
                      help="CSV label column: a header name or an index such as -1 "
                           "(default 'label')")
    data.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    data.add_argument("--test-size", type=_fraction,
                      help="fraction held out for testing; 0 trains on everything "
                           "(default 0.2; MNIST uses its own test files)")
    data.add_argument("--standardize", action="store_true",
                      help="scale each feature to zero mean and unit variance "
                           "(statistics from the training part)")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", metavar="SIZES|FILE",
                       help="layer sizes such as 2-4-1, or a JSON nn_architecture file (a list "
                            "of {input_dim, output_dim, activation}); default: inputs-32-outputs")
    model.add_argument("--model", metavar="PRESET|SPEC",
                       help=f"a convolutional network for an image dataset (digits, mnist:DIR): "
                            f"a preset ({', '.join(presets.PRESETS)}) or {presets.SPEC_HELP}; "
                            f"sized to the images, with an output layer for the classes")
    model.add_argument("--hidden-activation", help="activation of the hidden layers (default relu)")
    model.add_argument("--output-activation",
                       help="default: sigmoid for two classes, softmax for more, identity for "
                            "real-valued labels")
    model.add_argument("--loss", default="auto", help="default: the one fitting the output layer")
    model.add_argument("--init", default="auto", metavar="NAME[:SCALE]",
                       help="weight initializer: auto, he, xavier, or normal:0.01 (randn*0.01)")
    model.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    training = parser.add_argument_group("training")
    training.add_argument("--optimizer",
                          help=f"{', '.join(optimizers.TABLE)} (default sgd)")
    training.add_argument("--lr", type=_positive(float), help="learning rate")
    for name in OPTIMIZER_SETTINGS:
        training.add_argument(f"--{name.replace('_', '-')}", type=float,
                              help="optimizer setting (only for optimizers that take it)")
    training.add_argument("--epochs", type=_positive(int), default=100, help="(default 100)")
    training.add_argument("--batch-size", type=_positive(int),
                          help="rows per step (default: the whole training set)")
    training.add_argument("--seed", type=int, default=0,
                          help="seeds the weights, the split and the shuffling (default 0)")
    training.add_argument("--backend", help="numpy, numba or cupy (overrides FASTNN_BACKEND)")
    training.add_argument("--resume", type=_named("file"), metavar="CHECKPOINT",
                          help="continue a saved model.npz: its layers, optimizer state and "
                               "seed carry on exactly (on any backend)")
    training.add_argument("--distributed", action="store_true",
                          help="train data-parallel over MPI, launched as mpiexec -n N fastnn "
                               "train ... --distributed (needs fastnn[mpi]); every rank loads "
                               "the data, rank 0 prints and writes the outputs")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=_named("folder"), metavar="DIR",
                        help="write history.csv, history.json, metrics.json and plots here")
    output.add_argument("--no-plots", action="store_true", help="write no PNG files")
    output.add_argument("--log-every", type=_positive(int), metavar="K",
                        help="print every K-th epoch (default: about 10 lines)")
    output.add_argument("--quiet", action="store_true", help="print nothing")
    parser.set_defaults(run=run)


def run(args):
    rank, size = guard.place() if not args.distributed and guard.launched() else (0, 1)
    if str(size).strip() not in ("1", "?"):  # ("?": srun's PMIx names no size; let it run)
        if str(rank) != "0":
            return 2  # rank 0 says why, once
        raise ValueError(
            f"fastnn train is rank 0 of {size} of an MPI launch without --distributed: every "
            f"rank would train a copy of its own and write the same outputs; add --distributed "
            f"to train one model over the ranks, or set FASTNN_MPI_GUARD=0 to run them apart")
    world = DataParallel() if args.distributed else None
    failure = None
    try:
        split, data, scaling, model, description, optimizer, seed = prepare(args, world)
    except Exception as error:
        if world is None:
            raise
        failure = error
    if world is not None and _failed(world, failure):
        return 2  # rank 0 says why, once
    X_train, X_test, y_train, y_test = data
    validation = None if X_test is None else (X_test, y_test)
    lead = world is None or world.rank == 0  # the rank that prints and writes
    say = (lambda *a: None) if args.quiet or not lead else print
    held_out = "none held out" if X_test is None else f"{len(X_test)} held out for testing"
    shown = optimizer if optimizer is not None else model.optimizer
    ranks = "" if world is None else f", data-parallel over {world.size} MPI ranks"
    say(f"training {description} with {shown!r} on the {model.backend.name!r} backend "
        f"({model.dtype_name}{ranks}): {args.dataset}, {len(X_train)} training samples, "
        f"{held_out}")
    start = time.perf_counter()
    try:
        bar = not args.quiet and sys.stdout.isatty() and sys.stderr.isatty()
        lines = 0 if args.quiet or bar else (args.log_every or max(1, args.epochs // 10))
        model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=optimizer, lr=args.lr if optimizer is None else None, seed=seed,
                  validation_data=validation, verbose=lines, progress=bar, distributed=world)
    except TrainingDiverged as error:
        if args.out is not None and lead:
            write_history(args.out, error.history)
            write_json(args.out / "metrics.json", {"diverged": str(error), **run_settings(args)})
        raise
    seconds = time.perf_counter() - start
    if not lead:
        return 0
    results = {"train": model.evaluate(X_train, y_train)}
    if X_test is not None:
        results["test"] = model.evaluate(X_test, y_test)
    say("; ".join(f"{part} {_numbers(r)}" for part, r in results.items())
        + f" after {args.epochs} epochs in {seconds:.1f} s")
    if args.out is not None:
        written = write_outputs(args, model, split, results, seconds, scaling)
        model.save(args.out / "model.npz")
        written.append(args.out / "model.npz")
        say(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _failed(world, error):
    """Whether any rank failed before training (``error``: this rank's failure, or None),
    which every rank learns here. Rank 0 raises the failure, to be reported once: its own
    error, or the DistributedError naming the failed ranks and their errors; the other
    ranks return True, to end with status 2 and print nothing."""
    try:
        world.check(error)
    except DistributedError as relayed:
        error = relayed
    if error is not None and world.rank == 0:
        raise error
    return error is not None


def prepare(args, world):
    """Everything before fit: (split as loaded, the data the model sees, the scaling,
    model, description, optimizer, seed)."""
    if args.out is not None and (world is None or world.rank == 0):
        check_out(args.out)  # before training, not after it
    plotting = args.out is not None and not args.no_plots
    if plotting and importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            "the plots need matplotlib, which is not installed here; install it with "
            "pip install 'fastnn[plot]', or pass --no-plots"
        )
    if args.backend is not None:
        backend = backends.set_backend(backends.canonical_name(args.backend, source="--backend"))
    else:
        backend = backends.select_from_environment()
    if world is not None and backend.name == "cupy":
        world.select_gpu()  # one GPU per rank, before any array is made
    resumed = None if args.resume is None else resume_model(args)
    split = load_data(args, _wanting_images(args, resumed and resumed[0]))
    X_train, X_test, y_train, y_test = split
    scaling = None
    if args.standardize:
        X_train, X_test, scaling = _standardized(X_train, X_test)
    if resumed is not None:
        model, description = resumed
        optimizer, seed = None, None  # the checkpoint's optimizer and seed carry on
    else:
        model, description = build_model(args, X_train, y_train)
        optimizer, seed = make_optimizer(args), args.seed
    data = X_train, X_test, y_train, y_test
    return split, data, scaling, model, description, optimizer, seed


# ---- data ----


def _standardized(X_train, X_test):
    """(X_train, X_test, scaling) standardized per feature (per pixel for images), with
    the training part's statistics."""
    flat = X_train.reshape(len(X_train), -1)
    X, mean, std = standardize(flat)
    X_train = X.reshape(X_train.shape)
    if X_test is not None:
        X_test = standardize(X_test.reshape(len(X_test), -1), mean, std)[0].reshape(X_test.shape)
    return X_train, X_test, {"mean": mean.tolist(), "std": std.tolist()}


def load_data(args, wanting_images=None):
    """(X_train, X_test, y_train, y_test); X_test and y_test are None for --test-size 0.
    ``wanting_images`` names the option whose model takes images (see _wanting_images):
    the data then comes as images (N, C, H, W)."""
    name, _, argument = args.dataset.partition(":")
    key = normalize(name)
    if key in FILE_DATASETS:
        if not argument:
            raise ValueError(f"--dataset {name} needs a {FILE_DATASETS[key]}: "
                             f"--dataset {name}:{FILE_DATASETS[key]}")
        _refuse(args, name, ("n_samples", "noise", "data_seed"), "generated datasets")
        _images(args, key, wanting_images)  # a CSV file holds flat rows: refused for a CNN
        if key == "csv":
            label = "label" if args.label is None else _column(args.label)
            X, y = datasets.load_csv(argument, label=label, delimiter=args.delimiter)
            return _split(args, X, y)
        _refuse(args, name, ("label", "delimiter"), "CSV files")
        _refuse(args, name, ("test_size",), "datasets without their own test part")
        images = _images(args, key, wanting_images)
        X_train, y_train = datasets.mnist(argument, "train", images=images)
        X_test, y_test = datasets.mnist(argument, "test", images=images)
        return X_train, X_test, y_train, y_test
    generator = lookup("dataset", name, {**BUILTIN, **{k: None for k in FILE_DATASETS}})
    if argument:
        raise ValueError(f"--dataset {name} takes no ':' argument; got {args.dataset!r}")
    _refuse(args, name, ("label", "delimiter"), "CSV files")
    options = _generator_options(args, generator)
    if _images(args, generator.__name__, wanting_images):
        options["images"] = True
    X, y = generator(**options)
    return _split(args, X, y)


def _wanting_images(args, resumed):
    """The option (``--model NAME``, ``--resume PATH``) whose model takes images, or None."""
    if resumed is not None:
        return f"--resume {args.resume}" if len(resumed.input_shape) == 3 else None
    if args.model is not None and presets.needs_images(args.model):
        return f"--model {args.model}"
    return None


def _images(args, key, wanting_images):
    """True if the data must come as images; a model that takes images on a dataset of
    flat samples is an error."""
    if wanting_images is None:
        return False
    if key not in IMAGE_DATASETS:
        raise ValueError(f"{wanting_images} is a convolutional network and needs images, "
                         f"but dataset {args.dataset} gives flat samples; use it with an image "
                         f"dataset (digits, mnist:DIR), or give a flat dataset --arch sizes")
    return True


def _generator_options(args, generator):
    parameters = inspect.signature(generator).parameters
    options = {}
    for option, value in (("n_samples", args.n_samples), ("noise", args.noise),
                          ("seed", args.data_seed)):
        if value is None:
            continue
        if option not in parameters:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} does not apply to dataset {generator.__name__!r}")
        options[option] = value
    seed = parameters.get("seed")
    if "seed" not in options and seed is not None and seed.default is None:
        options["seed"] = args.seed  # a fixed default seed (planar's course data) is kept
    return options


def _refuse(args, name, options, applies_to):
    for option in options:
        if getattr(args, option) is not None:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} applies to {applies_to}, not to --dataset {name}")


def _split(args, X, y):
    test_size = DEFAULT_TEST_SIZE if args.test_size is None else args.test_size
    if test_size == 0:
        return X, None, y, None
    return train_test_split(X, y, test_size=test_size, seed=args.seed)


def _column(label):
    return int(label) if re.fullmatch(r"-?\d+", label.strip()) else label


# ---- model ----


def resume_model(args):
    """(model, description) from --resume; options that would rebuild the model or its
    optimizer are refused, since the checkpoint already fixes them."""
    clashing = [f"--{name.replace('_', '-')}" for name in
                ("arch", "model", "hidden_activation", "output_activation", "optimizer",
                 *OPTIMIZER_SETTINGS) if getattr(args, name) is not None]
    if clashing:
        raise ValueError(f"{', '.join(clashing)} cannot be combined with --resume: the "
                         f"checkpoint fixes the model and its optimizer (only --lr may change)")
    model = fastnn.load(args.resume)
    return model, (f"{args.resume} ({model.epochs_trained} epochs trained, "
                   f"{model.loss.name})")


def build_model(args, X, y):
    """(model, a one-line description) from --arch or --model and the activation options."""
    if args.model is not None:
        return _from_spec(args, X, y)
    n_features = X.shape[1]
    if args.arch is not None and not SIZES.fullmatch(args.arch):
        return _from_file(args, n_features)
    classes = _classes(y)
    if args.arch is None:
        n_out = 1 if classes is None or classes <= 2 else classes
        dims = [n_features, 32, n_out]
    else:
        dims = [int(d) for d in args.arch.split("-")]
        _check_inputs(dims[0], n_features, args)
    hidden = args.hidden_activation or "relu"
    output = args.output_activation or _default_output(dims[-1], classes)
    model = fastnn.from_layer_dims(dims, hidden, output, init=_init(args.init), loss=args.loss,
                                   dtype=args.dtype, seed=args.seed)
    arch = "-".join(map(str, dims))
    return model, f"{arch} {hidden}/{output} ({model.loss.name})"


def _from_spec(args, X, y):
    if args.arch is not None:
        raise ValueError("--arch and --model both give the model; give one of them")
    classes = _classes(y)
    if classes is None:
        raise ValueError(f"--model builds a classifier, but dataset {args.dataset} has "
                         f"real-valued labels; use --arch for regression")
    n_out = 1 if classes <= 2 else classes
    hidden = args.hidden_activation or "relu"
    output = args.output_activation or _default_output(n_out, classes)
    name, spec = presets.resolve(args.model)
    model = presets.cnn(args.model, X.shape[1:], n_out, hidden, output, init=_init(args.init),
                        loss=args.loss, dtype=args.dtype, seed=args.seed)
    shown = name if name == spec else f"{name} ({spec})"
    return model, f"{shown} {hidden}/{output} ({model.loss.name})"


def _classes(y):
    return int(y.max()) + 1 if y.dtype.kind in "iu" else None


def _from_file(args, n_features):
    path = Path(args.arch)
    if path.suffix.lower() != ".json" and not path.is_file():
        raise ValueError(f"--arch must be layer sizes such as 2-4-1 or a JSON nn_architecture "
                         f"file; got {args.arch!r}")
    if args.hidden_activation or args.output_activation:
        raise ValueError("--hidden-activation and --output-activation go with --arch sizes; "
                         "a JSON architecture names each layer's activation")
    try:
        architecture = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"architecture file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON ({error})") from None
    if isinstance(architecture, list) and architecture and isinstance(architecture[0], dict):
        _check_inputs(architecture[0].get("input_dim"), n_features, args)
    model = fastnn.from_architecture(architecture, init=_init(args.init), loss=args.loss,
                                     dtype=args.dtype, seed=args.seed)
    return model, f"{path.name} ({model.loss.name})"


def _check_inputs(n_in, n_features, args):
    if n_in != n_features:
        raise ValueError(f"--arch {args.arch} takes {n_in} inputs, but dataset {args.dataset} has "
                         f"{n_features} features per sample; start the architecture with "
                         f"{n_features}")


def _default_output(n_out, classes):
    if classes is None:
        return "identity"
    return "sigmoid" if n_out == 1 else "softmax"


def _init(spec):
    name, _, scale = spec.partition(":")
    if not scale:
        return name
    try:
        return {"name": name, "scale": float(scale)}
    except ValueError:
        raise ValueError(f"--init {spec}: the scale after ':' must be a number") from None


def make_optimizer(args):
    """The optimizer with --lr and the settings given; a setting it does not take is an
    error (listing the ones it does)."""
    cls = lookup("optimizer", args.optimizer or "sgd", optimizers.TABLE)
    accepted = inspect.signature(cls).parameters
    settings = {}
    for name in OPTIMIZER_SETTINGS:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            takes = ", ".join(f"--{p.replace('_', '-')}" for p in accepted)
            raise ValueError(f"--{name.replace('_', '-')} does not apply to the {cls.name} "
                             f"optimizer; it takes {takes}")
        settings[name] = value
    return cls(lr=args.lr, **settings)


# ---- output ----


def check_out(out):
    """Refuse an --out that cannot take the outputs: a file, a path under a file, a
    folder this process cannot write in, or an output name taken by a folder."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"cannot be made: {existing} is a file"
        raise ValueError(f"--out {out} {where}; --out needs a folder (created if missing), "
                         f"so give another path")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ValueError(f"--out {out}: cannot write in {existing} ({error.strerror}); "
                         f"give a folder you can write to") from None
    for name in OUTPUT_FILES:
        if (out / name).is_dir():
            raise ValueError(f"--out {out}: the output file {name} would replace the folder "
                             f"{out / name}; give another folder or remove that one")


def write_outputs(args, model, split, results, seconds, scaling):
    """history.csv, history.json, metrics.json and the plots; returns the paths."""
    from fastnn import plots

    out = args.out
    written = write_history(out, model.history)
    metrics = {**run_settings(args), "backend": model.backend.name, "seconds": seconds,
               "standardize": scaling, **results}
    written.append(write_json(out / "metrics.json", metrics))
    if args.no_plots:
        return written
    written.append(plots.plot_history(model.history, out / "learning_curves.png",
                                      title=args.dataset))
    one_label = model.task == "multiclass" or (model.task == "binary" and model.n_out == 1)
    if model.n_in == 2 and one_label:
        X, y = _everything(*split, scaling)
        title = args.dataset + (" (standardized inputs)" if scaling else "")
        written.append(plots.plot_decision_boundary(model, X, y, out / "decision_boundary.png",
                                                    title=title))
    return written


def _everything(X_train, X_test, y_train, y_test, scaling):
    """All samples, in the coordinates the model sees."""
    if X_test is None:
        X, y = X_train, y_train
    else:
        X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
    if scaling is not None:
        X = standardize(X, np.array(scaling["mean"]), np.array(scaling["std"]))[0]
    return X, y


def write_history(out, history):
    out.mkdir(parents=True, exist_ok=True)
    keys = list(history)
    rows = zip(*(history[k] for k in keys))
    with (out / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        writer.writerows([epoch, *row] for epoch, row in enumerate(rows, start=1))
    return [out / "history.csv", write_json(out / "history.json", history)]


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def run_settings(args):
    """The command line's choices, for metrics.json."""
    return {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("run", "command")}}


def _numbers(result):
    parts = []
    for key, value in result.items():
        parts.append(f"{key} {value:.1%}" if key == "accuracy" else f"{key} {value:.4f}")
    return ", ".join(parts)


def _named(what):
    """An argparse type: a Path that names something. An empty one (an unset shell
    variable, say) would be the current folder, which --out would then fill silently."""
    def convert(text):
        if not text.strip():
            message = f"must name a {what}; got {text!r}"
            if what == "folder":
                message += " (an unset shell variable?), which would write into the current folder"
            raise argparse.ArgumentTypeError(message)
        return Path(text)
    return convert


def _positive(kind):
    """An argparse type: a number of ``kind`` above zero."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}; got {text!r}")
        return value

    return convert


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1); got {text!r}")
    return value
