"""Learning-rate schedules, applied by ``fit`` at the start of every epoch.

A schedule is given to ``fit(lr_schedule=...)``; it starts from the optimizer's
learning rate at that moment (``base_lr``) and counts epochs from there
(``start_epoch``, in the model's global epoch count). The model keeps it, like its
optimizer, across later ``fit`` calls and in checkpoints, so training resumed from a
checkpoint follows the same learning rates as training that was never interrupted.
"""

import math

from fastnn.names import lookup
from fastnn.validation import in_range, positive_int, positive_number


class Schedule:
    name = "schedule"

    def __init__(self):
        self.base_lr = None
        self.start_epoch = 0

    def __repr__(self):
        settings = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{type(self).__name__}({settings})"

    def settings(self):
        """The constructor's arguments."""
        return {k: v for k, v in vars(self).items() if k not in ("base_lr", "start_epoch")}

    def config(self):
        return {"name": self.name, **vars(self)}

    def start(self, base_lr, epoch):
        """Begin at ``base_lr`` with the model's ``epoch`` (epochs trained so far)."""
        self.base_lr = positive_number("the scheduled learning rate", base_lr)
        self.start_epoch = int(epoch)

    def lr(self, epoch):
        """The learning rate for the epoch after ``epoch`` trained epochs."""
        return self.rate(max(epoch - self.start_epoch, 0))

    def rate(self, k):
        """The learning rate ``k`` epochs after the start."""
        raise NotImplementedError


class StepDecay(Schedule):
    """lr = base_lr * gamma ** (k // step_size): cut by ``gamma`` every ``step_size`` epochs."""

    name = "step"

    def __init__(self, step_size, gamma=0.1):
        super().__init__()
        self.step_size = positive_int("StepDecay step_size", step_size)
        self.gamma = in_range("StepDecay gamma", gamma, 0.0, 1.0, closed_high=True)
        if self.gamma == 0.0:
            raise ValueError("StepDecay gamma must be > 0; got 0 (it would stop training)")

    def rate(self, k):
        return self.base_lr * self.gamma ** (k // self.step_size)


class CosineDecay(Schedule):
    """lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * k / total_epochs)) / 2, then
    ``min_lr`` once ``total_epochs`` have passed."""

    name = "cosine"

    def __init__(self, total_epochs, min_lr=0.0):
        super().__init__()
        self.total_epochs = positive_int("CosineDecay total_epochs", total_epochs)
        self.min_lr = in_range("CosineDecay min_lr", min_lr, 0.0, float("inf"))

    def start(self, base_lr, epoch):
        super().start(base_lr, epoch)
        if self.min_lr > self.base_lr:
            raise ValueError(
                f"CosineDecay min_lr={self.min_lr} is above the learning rate it starts from "
                f"({self.base_lr}); pick min_lr <= lr"
            )

    def rate(self, k):
        if k >= self.total_epochs:
            return self.min_lr
        cosine = (1.0 + math.cos(math.pi * k / self.total_epochs)) / 2.0
        return self.min_lr + (self.base_lr - self.min_lr) * cosine


TABLE = {cls.name: cls for cls in (StepDecay, CosineDecay)}


def from_config(config):
    """A schedule from ``config()`` output (as stored in checkpoints)."""
    config = dict(config)
    cls = lookup("learning-rate schedule", config.pop("name", None), TABLE)
    base_lr, start_epoch = config.pop("base_lr", None), config.pop("start_epoch", 0)
    schedule = cls(**config)
    if base_lr is not None:
        schedule.start(base_lr, start_epoch)
    return schedule
