"""The README's recipe for optax wrappers that drop extra arguments (``optax.lookahead`` calls its inner
``update(updates, state, params)`` only): bind the batch into the transformation each step with
``functools.partial``. Checked against lookahead written out by hand around the plain optimizer (Zhang et al.
2019: ``k`` fast steps, then ``slow <- slow + alpha (fast - slow)`` and ``fast <- slow``), the same float64
operations compiled apart (``1e-12`` relative)."""

import functools

import jax
import optax

import kfac_reference as ref
import kfac_thermo as kt

LOSS = "softmax_cross_entropy"
SYNC, ALPHA, STEPS = 2, 0.5, 4


def with_batch(tx, batch):
    """``tx`` with ``batch=`` bound: the README's recipe."""
    return optax.GradientTransformation(tx.init, functools.partial(tx.update, batch=batch))


def test_lookahead_around_ngd_with_the_batch_bound(x64):
    """NGD with momentum: a state (the momentum trace) carried through lookahead's fast steps."""
    params, x, y = ref.problem(LOSS)
    ngd = kt.ngd(0.3, predict_fn=ref.mlp_predict, loss=LOSS, damping=0.05, momentum=0.9)
    lookahead = lambda batch: optax.lookahead(with_batch(ngd, batch), sync_period=SYNC, slow_step_size=ALPHA)

    @ref.quick_jit
    def step(pair, state):
        grads = ref.grad(LOSS, ref.mlp_predict, pair.fast, x, y)
        updates, state = lookahead((x, y)).update(grads, state, pair)
        return optax.apply_updates(pair, updates), state

    @ref.quick_jit
    def fast_step(fast, state):
        updates, state = ngd.update(ref.grad(LOSS, ref.mlp_predict, fast, x, y), state, fast, batch=(x, y))
        return optax.apply_updates(fast, updates), state

    pair = optax.LookaheadParams.init_synced(params)
    state = lookahead(None).init(pair)
    fast, slow, ngd_state = params, params, ngd.init(params)
    for k in range(STEPS):
        pair, state = step(pair, state)
        fast, ngd_state = fast_step(fast, ngd_state)
        if (k + 1) % SYNC == 0:
            slow = jax.tree_util.tree_map(lambda s, f: s + ALPHA * (f - s), slow, fast)
            fast = slow
        assert ref.rel_err(ref.flat(pair.fast), ref.flat(fast)) <= 1e-12, k
        assert ref.rel_err(ref.flat(pair.slow), ref.flat(slow)) <= 1e-12, k
