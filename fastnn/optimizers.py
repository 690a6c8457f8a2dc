"""Optimizers. Each keeps its per-parameter state on the model's device and updates
parameters through the backend's ops table, one fused op per parameter, so an
accelerating backend can make every update a single pass.

Weight decay (L2, added to the gradient) applies to weights only, not biases.

While a step is recorded for replay (``fastnn.replay``), ``clock`` holds the learning
rate and the step's other numbers (``step_numbers``: Adam's bias corrections) in
device memory, and the updates read them from there (``rate``, ``count``): a replayed
step must not reuse the numbers of the recorded one.
"""

from fastnn.names import lookup
from fastnn.validation import in_range, positive_number


class Optimizer:
    name = "optimizer"
    slots = ()  # names of the per-parameter state arrays
    default_lr = 0.01

    def __init__(self, lr=None, weight_decay=0.0):
        self.lr = positive_number(
            "lr", self.default_lr if lr is None else lr, hint="; the learning rate must be > 0"
        )
        self.weight_decay = in_range("weight_decay", weight_decay, 0.0, float("inf"))
        self.state = []  # per parameter: a tuple of state arrays named by ``slots``
        self.t = 0
        self.clock = None  # a fastnn.replay.StepClock while a step is recorded

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.config().items())})"

    def config(self):
        return {k: v for k, v in vars(self).items() if k not in ("state", "t", "clock")}

    @property
    def rate(self):
        """The learning rate a step uses: ``lr``, or its device copy on the clock."""
        return self.lr if self.clock is None else self.clock.lr

    @property
    def count(self):
        """The step number ``t`` a step uses, or the clock that holds its numbers on the
        device (``step_numbers``)."""
        return self.t if self.clock is None else self.clock

    def step_numbers(self, t):
        """The numbers besides the learning rate that step ``t``'s update computes on
        the host (a recorded step reads them from the device instead; see ``count``)."""
        return ()

    def step(self, params, backend):
        """Update every parameter in place from its ``grad``, on ``backend``."""
        self.ensure_state(params, backend)
        self.t += 1
        if self.clock is not None:
            self.clock.tick()
        for p, state in zip(params, self.state):
            self.update(backend.ops, p.value, p.grad, state, self.weight_decay if p.decay else 0.0)

    def ensure_state(self, params, backend):
        """Create the zero state for ``params`` on first use; check it matches after."""
        if not self.state:
            zeros = backend.xp.zeros_like
            self.state = [tuple(zeros(p.value) for _ in self.slots) for p in params]
        elif len(self.state) != len(params):
            raise ValueError(
                f"this optimizer holds state for {len(self.state)} parameters but the model has "
                f"{len(params)}; use a new optimizer for a different model"
            )

    def update(self, ops, p, g, state, weight_decay):
        raise NotImplementedError

    def move_state(self, convert):
        """Apply ``convert`` (old array -> new array) to all state, e.g. to change backend."""
        self.state = [tuple(convert(a) for a in arrays) for arrays in self.state]


class SGD(Optimizer):
    """Plain gradient descent: p -= lr * g."""

    name = "sgd"

    def update(self, ops, p, g, state, weight_decay):
        ops.sgd_update(p, g, self.rate, weight_decay)


class Momentum(Optimizer):
    name = "momentum"
    slots = ("velocity",)

    def __init__(self, lr=None, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = in_range("momentum", momentum, 0.0, 1.0)

    def update(self, ops, p, g, state, weight_decay):
        ops.momentum_update(p, g, state[0], self.rate, self.momentum, weight_decay)


class Nesterov(Momentum):
    name = "nesterov"

    def update(self, ops, p, g, state, weight_decay):
        ops.nesterov_update(p, g, state[0], self.rate, self.momentum, weight_decay)


class AdaGrad(Optimizer):
    name = "adagrad"
    slots = ("sum_sq",)

    def __init__(self, lr=None, eps=1e-7, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = positive_number("eps", eps)

    def update(self, ops, p, g, state, weight_decay):
        ops.adagrad_update(p, g, state[0], self.rate, self.eps, weight_decay)


class RMSprop(Optimizer):
    name = "rmsprop"
    slots = ("mean_sq",)
    default_lr = 0.001

    def __init__(self, lr=None, rho=0.9, eps=1e-7, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.rho = in_range("rho", rho, 0.0, 1.0)
        self.eps = positive_number("eps", eps)

    def update(self, ops, p, g, state, weight_decay):
        ops.rmsprop_update(p, g, state[0], self.rate, self.rho, self.eps, weight_decay)


class Adam(Optimizer):
    name = "adam"
    slots = ("m", "v")
    default_lr = 0.001

    def __init__(self, lr=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = in_range("beta1", beta1, 0.0, 1.0)
        self.beta2 = in_range("beta2", beta2, 0.0, 1.0)
        self.eps = positive_number("eps", eps)

    def step_numbers(self, t):
        return (1.0 - self.beta1**t, 1.0 - self.beta2**t)  # as ops.adam_update computes

    def update(self, ops, p, g, state, weight_decay):
        m, v = state
        ops.adam_update(
            p, g, m, v, self.rate, self.beta1, self.beta2, self.eps, self.count, weight_decay
        )


TABLE = {cls.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)}


def get(optimizer="sgd", lr=None, **params):
    """An Optimizer from a name ('sgd', 'adam', ...) and its settings, or an instance."""
    if isinstance(optimizer, Optimizer):
        if lr is not None or params:
            raise ValueError(
                "settings such as lr go to the optimizer's constructor when you pass an "
                "optimizer object; pass its name instead to set them here"
            )
        return optimizer
    cls = lookup("optimizer", optimizer, TABLE)
    return cls(lr=lr, **params)
