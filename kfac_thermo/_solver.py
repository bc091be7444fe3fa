r"""The one interface of a damped curvature solver, digital or thermodynamic, for both optimizer families.

A solver applies ``(C + damping)^-1`` to a vector, where ``C`` is the curvature an optimizer built: the batch
curvature ``G = W W^T`` of the natural-gradient family (``kfac_thermo._ngd``), or one layer's Kronecker factors
``(A, S)`` of K-FAC (``kfac_thermo._kfac``). Its work happens in two phases, as a lineax solver's ``init`` and
``compute``, or a device that is programmed once and run many times:

- :meth:`AbstractDampedSolver.refresh` turns the curvature and the damping into ``prepared`` arrays: a
  factorisation or inverse (digital), or the programmed drift and its law (the device). The natural-gradient
  family refreshes every step (its curvature is the batch's); K-FAC every ``inverse_period`` steps, keeping
  ``prepared`` in its optimizer state in between.
- :meth:`AbstractDampedSolver.apply` uses ``prepared`` on one right-hand side, with the solver's own persistent
  ``state`` (the device's node voltages, a conjugate-gradient warm start), which it returns updated.

Both return the :class:`kfac_thermo.Work` they did. Swapping a digital solver for a thermodynamic one changes
nothing else in an optimizer: that is what makes comparisons between them fair.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
from jaxtyping import Array, PRNGKeyArray, PyTree

import thermox

from ._work import Work


class AbstractDampedSolver(eqx.Module):
    """Solves ``(C + damping) d = v`` for a curvature ``C`` given at :meth:`refresh` (module docstring).

    Subclasses of one family agree on what ``curvature`` and ``like`` are: for the natural-gradient family a
    ``BatchCurvature`` and the flat parameter vector; for K-FAC the pair of Kronecker factors ``(A, S)`` and the
    layer's gradient matrix (n_out x n_in).
    """

    @property
    def device(self) -> thermox.AnalogDevice | None:
        """The simulated analog device this solver runs on, or None for a digital solver."""
        return None

    @property
    def is_thermodynamic(self) -> bool:
        """Whether the solves run on a simulated analog device."""
        return self.device is not None

    @property
    def needs_key(self) -> bool:
        """Whether the solver draws random numbers (a noisy device's thermal noise): the optimizer then needs a
        caller-given key."""
        return self.is_thermodynamic and not self.device.is_noiseless

    def for_layer(self, index: int) -> "AbstractDampedSolver":
        """The solver of K-FAC layer ``index`` (each layer may have its own chip); itself by default."""
        return self

    @abc.abstractmethod
    def init(self, like: Array) -> tuple[PyTree, PyTree]:
        """``(prepared, state)`` before the first refresh and step, shaped for right-hand sides like ``like``."""

    @abc.abstractmethod
    def refresh(self, curvature: Any, damping: Array, key: PRNGKeyArray) -> tuple[PyTree, Work]:
        """``prepared`` for ``curvature + damping``, and the work of preparing it. K-FAC keeps ``prepared`` in its
        optimizer state, so a K-FAC solver's must be arrays; the natural-gradient family uses it within the step."""

    @abc.abstractmethod
    def apply(self, prepared: PyTree, vector: Array, state: PyTree, *, step: Array,
              key: PRNGKeyArray) -> tuple[Array, PyTree, Work]:
        """``(C + damping)^-1 vector`` (exactly, or as the device reads it out), the solver's new ``state`` and the
        work of the solve. ``step`` counts the solves applied before this one (0 on the first)."""
