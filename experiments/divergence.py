"""Divergence of a training run, judged from its training loss step by step."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class DivergenceMonitor:
    """Watches the training loss: a non-finite loss, or one above ``spike_factor`` times the first step's (the
    parameters have blown up, even if the loss comes back down as the outputs saturate), diverges at once; a loss
    above ``factor`` times the first step's for ``window`` consecutive steps diverges at the last of them.

    The state (``initial_loss``, ``streak``) is plain numbers, checkpointed with the loop so that a resumed run
    judges its steps exactly as an uninterrupted one."""

    factor: float
    window: int
    spike_factor: float
    initial_loss: float | None = None
    streak: int = 0

    def observe(self, loss: float) -> str | None:
        """Take one step's loss; return why the run diverged at this step, or None."""
        if self.initial_loss is None:
            self.initial_loss = loss
        if not math.isfinite(loss):
            return f"train loss is {loss}"
        if loss > self.spike_factor * abs(self.initial_loss):
            return f"train loss {loss:.4g} is above {self.spike_factor:g} x the first step's ({self.initial_loss:.4g})"
        threshold = self.factor * abs(self.initial_loss)
        self.streak = self.streak + 1 if loss > threshold else 0
        if self.streak >= self.window:
            return (f"train loss above {self.factor:g} x the first step's ({self.initial_loss:.4g}) for "
                    f"{self.window} consecutive steps")
        return None

    def state(self) -> dict:
        return {"initial_loss": self.initial_loss, "streak": self.streak}
