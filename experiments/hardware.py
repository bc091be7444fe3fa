"""Hardware models: a step's :class:`kfac_thermo.Work` as modeled seconds.

Stand-in (the layout helper's) until the hardware models of the work-record issue land here: it keeps the
project's old conventions, so modeled times are comparable with earlier runs. Digital work runs on one host at
:data:`HOST_FLOPS_PER_S`, a model pass costing ``2 b N`` flops (b examples, N parameters) and every other flop
counted once (bytes and kernel launches are not priced); analog work moves every converted value over one link at
the ``thermox.cost.CostModel`` defaults (16 bits at 50 Gb/s, whatever the converters' own bits) and runs
``analog_tau`` of its time constant R C = 1 us.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

import kfac_thermo
import thermox

HOST_FLOPS_PER_S = 1e13
"""The host's throughput, flop/s (the one definition of this constant)."""


def step_seconds(work: kfac_thermo.Work, model: thermox.cost.CostModel = thermox.cost.CostModel()) -> Float[Array, ""]:
    """Modeled seconds of ``work``: host flops at :data:`HOST_FLOPS_PER_S`, then the transfers and the analog run."""
    passes = work.forward_passes + work.reverse_passes
    host_flops = passes * 2.0 * work.examples * work.params + sum(work.flops.values())
    values = work.dac_values + work.coupling_values + work.adc_values
    transfer_s = thermox.cost.transfer_time(values, bits=model.conversion_bits, bandwidth_bps=model.link_bandwidth_bps)
    return jnp.asarray(host_flops / HOST_FLOPS_PER_S + transfer_s + work.analog_tau * model.tau_s, jnp.float32)
