"""One rank of the data-parallel tests: ``mpiexec -n N python tests/mpi_worker.py
SCENARIO OUT`` (test_distributed.py launches it). FASTNN_BACKEND picks the backend,
except for ``transfers``, which runs on the strict stand-in (tests/strict_backend.py),
whose every host copy is counted. Every rank writes
what it saw to OUT/rank<r>.npz and OUT/rank<r>.json for the test to compare, except in
``leave WHAT WHEN`` (the last rank fails or ends early), whose rank 0 writes OUT/done
if it gets to the end."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from distributed_cases import (
    IMAGE_VAL,
    IMAGES,
    LABELS,
    OPTIONS,
    VAL,
    X,
    Y,
    cnn,
    model,
    shards,
    state,
)

import fastnn
from fastnn import atomic
from fastnn.distributed import DataParallel


def exact(dp, out):
    """The same training twice, pre-sharded data, and a resumed run."""
    arrays, report = {}, {"histories": {}}

    def keep(name, trained, history):
        arrays.update({f"{name}.{i}": a for i, a in enumerate(state(trained))})
        report["histories"][name] = history

    for name in ("first", "second"):
        net = model()
        keep(name, net, net.fit(X, Y, validation_data=VAL, distributed=dp, **OPTIONS))
    mine, val = shards(dp.size)[dp.rank], shards(dp.size, VAL)[dp.rank]
    net = model()
    keep("sharded", net, net.fit(*mine, validation_data=val,
                                 distributed=DataParallel(sharded=True), **OPTIONS))
    half = model()
    half.fit(X, Y, distributed=dp, **{**OPTIONS, "epochs": 2})
    path = out / "half.npz"
    if dp.rank == 0:
        half.save(path)
    dp.check()  # every rank waits for the file
    resumed = fastnn.load(path)
    keep("resumed", resumed, resumed.fit(X, Y, epochs=2, batch_size=OPTIONS["batch_size"],
                                         clip_norm=OPTIONS["clip_norm"], distributed=dp))
    report["reductions"] = [dp.reductions.count, dp.reductions.bytes]
    return arrays, report


def cnn_exact(dp, out, norm=False):
    """A CNN (with a BatchNorm2D if ``norm``): the same training as simulate(N), and a
    checkpoint saved after 2 epochs on rank 0, loaded on every rank and trained on for 2
    more."""
    arrays, report = {}, {"histories": {}}
    net = cnn(norm=norm)
    report["histories"]["first"] = net.fit(IMAGES, LABELS, validation_data=IMAGE_VAL,
                                           distributed=dp, **OPTIONS)
    arrays.update({f"first.{i}": a for i, a in enumerate(state(net))})
    half = cnn(norm=norm)
    half.fit(IMAGES, LABELS, distributed=dp, **{**OPTIONS, "epochs": 2})
    path = out / "cnn.npz"
    if dp.rank == 0:
        half.save(path)
    dp.check()  # every rank waits for the file
    resumed = fastnn.load(path)
    report["histories"]["resumed"] = resumed.fit(
        IMAGES, LABELS, epochs=2, batch_size=OPTIONS["batch_size"],
        clip_norm=OPTIONS["clip_norm"], distributed=dp)
    arrays.update({f"resumed.{i}": a for i, a in enumerate(state(resumed))})
    return arrays, report


def mismatch(dp, out):
    """Settings that differ on the last rank: every rank must raise, none may hang."""
    last = dp.rank == dp.size - 1
    cases = {
        "layers": lambda: model(hidden=11 if last else 10).fit(X, Y, distributed=dp,
                                                               **OPTIONS),
        "dtype": lambda: model(dtype="float32" if last else "float64").fit(
            X, Y, distributed=dp, **OPTIONS),
        "features": lambda: model().fit(X[:, :3] if last else X, Y, distributed=dp, **OPTIONS),
        "samples": lambda: model().fit(X[:-1] if last else X, Y[:-1] if last else Y,
                                       distributed=dp, **OPTIONS),
        "epochs": lambda: model().fit(X, Y, distributed=dp, **{**OPTIONS,
                                                               "epochs": 3 if last else 4}),
        "batch": lambda: model().fit(X, Y, distributed=dp, **{**OPTIONS,
                                                              "batch_size": dp.size - 1}),
    }
    report = {}
    for name, run in cases.items():
        try:
            run()
            report[name] = None
        except Exception as error:
            report[name] = [type(error).__name__, str(error)]
    net = model()  # and the ranks are still in step
    report["after"] = net.fit(X, Y, distributed=dp, **OPTIONS)["loss"]
    return {}, report


class Fail(fastnn.Callback):
    """Raise (or report the pid, to be killed) on the last rank after epoch 2."""

    def __init__(self, dp, out, kill):
        self.dp, self.out, self.kill = dp, out, kill

    def on_epoch_end(self, epoch, logs):
        if epoch == 2 and self.dp.rank == self.dp.size - 1:
            if self.kill:  # atomically: the test never reads half a pid
                atomic.write(self.out / "pid", lambda file: file.write(b"%d" % os.getpid()))
            else:
                raise RuntimeError("boom on the last rank")


def fault(dp, out, kill):
    net = model()
    net.fit(X, Y, distributed=dp, callbacks=[Fail(dp, out, kill)],
            **{**OPTIONS, "epochs": 10_000_000 if kill else 4})
    return {}, {"finished": True}


def uncaught(dp, out):
    """An error outside fit on the last rank, while the others wait in a collective."""
    if dp.rank == dp.size - 1:
        raise RuntimeError("uncaught on the last rank")
    dp.check()
    return {}, {}


def transfers(dp, out):
    """Training on device data: every host copy is counted (host-buffer transport)."""
    from strict_backend import StrictBackend

    device = StrictBackend()
    net = model(device)
    Xd, Yd = device.asarray(X, device.dtype("float64")), device.asarray(Y)
    with device.count_transfers() as counted:
        net.fit(Xd, Yd, distributed=dp, **OPTIONS)
    report = {key: getattr(counted, key) for key in counted.__slots__}
    return {f"state.{i}": a for i, a in enumerate(state(net))}, report


def nccl(dp, out):
    """CuPy over NCCL on one rank: the same bits as one process, in both sum modes, and
    no host copy per step (device data: only fit's own reads)."""
    device = fastnn.backends.load("cupy")
    dp.select_gpu()
    Xd, Yd = device.asarray(X, device.dtype("float64")), device.asarray(Y)
    alone = model(device)
    expected = alone.fit(Xd, Yd, **OPTIONS)
    report, arrays = {"expected": expected}, {}
    for exact in (True, False):
        gpu = DataParallel(exact=exact, nccl=True)
        net = model(device)
        with device.count_transfers() as counted:
            report[f"history.{exact}"] = net.fit(Xd, Yd, distributed=gpu, **OPTIONS)
        report[f"transfers.{exact}"] = [counted.to_device, counted.to_host, counted.checks]
        report["transport"] = gpu.transport_for(device).transport
        arrays.update({f"exact{exact}.{i}": a for i, a in enumerate(state(net))})
    arrays.update({f"alone.{i}": a for i, a in enumerate(state(alone))})
    return arrays, report


def leave(out, what, when):
    """The last rank raises (``what`` "raise") or calls sys.exit(0) or sys.exit(3)
    ("exit0", "exit3") at ``when``: before fit, having only imported fastnn ("import")
    or created a DataParallel too ("dp"); between two fits ("between"); or after the
    last fit, while rank 0 still works without collectives ("after")."""
    rank = int(os.environ.get("PMI_RANK") or os.environ["OMPI_COMM_WORLD_RANK"])
    last = rank == int(os.environ.get("PMI_SIZE") or os.environ["OMPI_COMM_WORLD_SIZE"]) - 1

    def end(now):
        if last and now == when:
            if what == "raise":
                raise FileNotFoundError(f"no data on rank {rank}")
            sys.exit(int(what.removeprefix("exit")))

    if when == "dp":
        DataParallel()
    end("import")
    end("dp")
    fits = 2 if when == "between" else 1
    for fit in range(fits):
        model().fit(X, Y, distributed=True, **OPTIONS)
        end("between" if fit == 0 and fits == 2 else "after")
    if rank == 0:
        time.sleep(1.0 if when == "after" else 0.0)  # the last rank ends meanwhile
        (out / "done").write_text("rank 0 got to the end")


def main(scenario, out, *args):
    out = Path(out)
    if scenario == "leave":
        return leave(out, *args)
    dp = DataParallel()
    start = time.perf_counter()
    if scenario in ("raise", "kill"):
        arrays, report = fault(dp, out, scenario == "kill")
    else:
        arrays, report = {"exact": exact, "cnn": cnn_exact,
                          "cnn_norm": lambda dp, out: cnn_exact(dp, out, norm=True),
                          "mismatch": mismatch, "transfers": transfers,
                          "nccl": nccl, "uncaught": uncaught}[scenario](dp, out)
    report.update(rank=dp.rank, size=dp.size, seconds=time.perf_counter() - start)
    np.savez(out / f"rank{dp.rank}.npz", **arrays)
    (out / f"rank{dp.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
