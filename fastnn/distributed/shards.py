"""Which rows each rank trains on, and the per-step pieces of data-parallel training.

Every step trains on one global batch, cut into contiguous parts, one per rank:

- whole data on every rank (the default): the global batches are the single process's
  (rows [start, start + batch) of the epoch's permutation), and rank r takes part r
  of each, the parts as equal as possible (``split``);
- pre-sharded data (``sharded=True``): rank r holds rows off_r .. off_r + m_r - 1 of
  the concatenation of every rank's part, in rank order. The epoch's permutation of
  all M rows orders each rank's own rows; each rank cuts them into S = ceil(M / batch)
  near-equal chunks, and global batch j is chunk j of rank 0, then of rank 1, and so on.

``Plan`` gives, per step, the rows of every rank; every rank needs at least one
in every step (``DataParallel`` checks this before training). Within a step the rank
knows its rows' place in the global batch (``Share``): dropout draws the masks of
exactly those rows from the global stream (``RankStream``), BatchNorm takes its
statistics over the global batch (``BatchStats``), and the loss gradient is scaled by
the rank's share of the global batch, so that the summed gradients are the global
batch's mean gradient, however unequal the parts.
"""

import contextlib
import itertools
import math
import time

from fastnn.steps import Batches


def flatten(xp, arrays):
    """The arrays' elements in one 1-D array, one after another: one collective for all."""
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


def pieces(xp, flat, shapes):
    """``flatten``'s inverse: views of ``flat`` shaped as ``shapes``, in order."""
    at = 0
    for shape in shapes:
        size = math.prod(shape)
        yield xp.reshape(flat[at:at + size], shape)
        at += size


def split(n, parts):
    """n rows cut into ``parts`` contiguous parts, sizes as equal as possible (the
    larger ones first)."""
    q, r = divmod(n, parts)
    return [q + (i < r) for i in range(parts)]


class Plan:
    """The steps of an epoch: ``counts[j][r]``, the rows rank r trains on in step j,
    from every rank's sample count, the global batch size and the data layout."""

    def __init__(self, rows_per_rank, batch, sharded):
        self.rows_per_rank, self.batch, self.sharded = list(rows_per_rank), batch, sharded
        ranks = len(self.rows_per_rank)
        if sharded:
            steps = -(-sum(self.rows_per_rank) // batch)
            per_rank = [split(m, steps) for m in self.rows_per_rank]
            self.counts = [list(counts) for counts in zip(*per_rank)]
        else:
            m = self.rows_per_rank[0]
            self.counts = [split(min(batch, m - start), ranks) for start in range(0, m, batch)]

    def offset(self, rank):
        """Rank ``rank``'s first row in the concatenation of every rank's rows."""
        return sum(self.rows_per_rank[:rank])

    def starts(self, rank):
        """Where rank ``rank``'s rows of each step begin in its (ordered) rows."""
        if not self.sharded:
            return [j * self.batch + sum(c[:rank]) for j, c in enumerate(self.counts)]
        return [0, *itertools.accumulate(c[rank] for c in self.counts)][:-1]


class Share:
    """This rank's rows in the current global batch: [lo, hi) of ``total``."""

    lo = hi = total = 0

    @property
    def fraction(self):
        return (self.hi - self.lo) / self.total


class RankStream:
    """A dropout layer's random stream as one rank sees it: of each global batch's
    draw (``total`` rows), only the samples of this rank's rows [lo, hi), so the masks
    are those a single process draws for the same rows."""

    def __init__(self, rng, share):
        self.rng, self.share = rng, share

    def uniform(self, shape, dtype):
        share, per_row = self.share, math.prod(shape[1:])
        if shape[0] != share.hi - share.lo:
            raise ValueError(f"dropout input has {shape[0]} rows, but this rank trains on "
                             f"{share.hi - share.lo} rows of the global batch")
        self.rng.counter += share.lo * per_row
        out = self.rng.uniform(shape, dtype)
        self.rng.counter += (share.total - share.hi) * per_row
        return out


class BatchStats:
    """What a BatchNorm layer needs from the other ranks: column sums over the global
    batch (Horovod's SyncBatchNorm: every rank's rows weigh the same)."""

    def __init__(self, comm, backend, share):
        self.comm, self.backend, self.share = comm, backend, share

    @property
    def rows(self):
        return self.share.total

    def mean(self, A):
        """Column means of A over the global batch (one collective)."""
        return self.comm.sum(self.backend.xp.sum(A, axis=0), self.backend) / self.share.total

    def sums(self, *vectors):
        """Each vector summed over the ranks (one collective for all of them)."""
        xp = self.backend.xp
        total = self.comm.sum(xp.stack(vectors), self.backend)
        return [total[i, ...] for i in range(len(vectors))]


class Reductions:
    """Counts of the per-step gradient sums: how many, their seconds (host time: on a
    GPU with NCCL, the time to queue them) and the bytes each rank contributed."""

    def __init__(self):
        self.count, self.seconds, self.bytes = 0, 0.0, 0

    def __repr__(self):
        return f"Reductions(count={self.count}, seconds={self.seconds:.6f}, bytes={self.bytes})"


class Shards(Batches):
    """``fastnn.steps.Batches`` for one rank of a data-parallel job."""

    local = False  # its steps talk to the other ranks

    def __init__(self, comm, model, X, Y, plan, reductions):
        super().__init__(model.backend.xp, X, Y, plan.batch)
        self.comm, self.model, self.plan, self.reductions = comm, model, plan, reductions
        self.share = Share()
        self.stats = BatchStats(comm, model.backend, self.share)

    @property
    def samples(self):
        """Every rank's rows (the global sample count)."""
        rows = self.plan.rows_per_rank
        return sum(rows) if self.plan.sharded else rows[0]

    def spans(self, order):
        """This rank's rows of every step, as ``Batches.spans`` gives them, with
        ``scale`` and ``share`` set for each step while it is taken."""
        rank, xp, plan = self.comm.rank, self.xp, self.plan
        if plan.sharded and order is not None:  # own rows, in the permutation's order
            offset = plan.offset(rank)
            order = xp.argsort(xp.argsort(order)[offset:offset + self.X.shape[0]])
        for start, counts in zip(plan.starts(rank), plan.counts):
            lo = sum(counts[:rank])
            self.share.lo, self.share.hi, self.share.total = lo, lo + counts[rank], sum(counts)
            self.scale = self.share.fraction
            yield start, start + counts[rank], order

    def __call__(self, order):
        """This rank's (X, Y) of every step, with dropout and BatchNorm layers drawing
        and normalizing over the global batch meanwhile."""
        dropouts = [layer for layer in self.model.layers if hasattr(layer, "reseed")]
        norms = [layer for layer in self.model.layers if hasattr(layer, "sync")]
        for layer in dropouts:
            layer.rng = RankStream(layer.rng, self.share)
        for layer in norms:
            layer.sync = self.stats
        try:
            yield from super().__call__(order)
        finally:
            for layer in dropouts:
                layer.rng = layer.rng.rng
            for layer in norms:
                layer.sync = None

    def reduce(self, params):
        """Sum the gradients over the ranks, as one flat buffer."""
        xp = self.xp
        flat = self.sum_gradients(flatten(xp, [p.grad for p in params]))
        for p, grad in zip(params, pieces(xp, flat, [p.grad.shape for p in params])):
            p.grad = grad

    def sum_gradients(self, flat):
        """The flat buffer of every gradient summed over the ranks (one collective),
        counted in ``reductions``."""
        begin = time.perf_counter()
        total = self.comm.sum(flat, self.model.backend)
        self.reductions.seconds += time.perf_counter() - begin
        self.reductions.count += 1
        self.reductions.bytes += total.size * self.xp.finfo(total.dtype).bits // 8
        return total

    @contextlib.contextmanager
    def summing(self, flat):
        """``with batches.summing(flat) as sum_in_place:`` each call sums ``flat`` over the
        ranks in place, as ``sum_gradients`` does (one collective, counted in
        ``reductions``), prepared once for the steps of an epoch (``Communicator.summing``)."""
        reductions, nbytes, clock = self.reductions, flat.nbytes, time.perf_counter
        with self.comm.summing(flat, self.model.backend) as sum_in_place:

            def counted():
                begin = clock()
                sum_in_place()
                reductions.seconds += clock() - begin
                reductions.count += 1
                reductions.bytes += nbytes

            yield counted

    def total(self, sums):
        return self.comm.sum(sums, self.model.backend)
