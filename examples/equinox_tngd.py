"""Equinox's tutorial training loop with TNGD in place of Adam, on scikit-learn's digits.

The loop is equinox's own (``eqx.filter_value_and_grad``, ``eqx.filter_jit``, ``eqx.apply_updates``); the changes
are marked ``# kfac_thermo``: the model split once into ``predict_fn(params, inputs)``, the one-line swap of
``optax.adamw`` for ``kfac_thermo.tngd`` (a simulated noisy analog device: pass it a key) and ``batch=(x, y)`` in
``update``, which the curvature needs.

Run: ``python examples/equinox_tngd.py`` (``EXAMPLE_STEPS=20`` for a quick run).
"""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from sklearn.datasets import load_digits

import kfac_thermo
import thermox

STEPS = int(os.environ.get("EXAMPLE_STEPS", 300))
BATCH = 64

images, labels = load_digits(return_X_y=True)
images, labels = (images / 16.0).astype(np.float32), labels.astype(np.int32)
model = eqx.nn.MLP(64, 10, 32, depth=2, activation=jax.nn.relu, key=jr.key(0))

params, static = eqx.partition(model, eqx.is_array)  # kfac_thermo
predict_fn = lambda params, x: jax.vmap(eqx.combine(params, static))(x)  # kfac_thermo


def loss(model, x, y):
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# optim = optax.adamw(3e-3)
optim = kfac_thermo.tngd(0.2, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=0.1, t=20.0,
                         device=thermox.AnalogDevice(kappa0=1e-4), key=jr.key(1), method="exact")  # kfac_thermo
# (method="exact": the device's law from an eigendecomposition of the (b m) x (b m) curvature Gram; at this size
# it compiles faster than the default Lanczos path and gives the same law.)
opt_state = optim.init(eqx.filter(model, eqx.is_array))


@eqx.filter_jit
def make_step(model, opt_state, x, y):
    loss_value, grads = eqx.filter_value_and_grad(loss)(model, x, y)
    updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array), batch=(x, y))  # kfac_thermo
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss_value


rng = np.random.default_rng(2)
losses = []
for step in range(STEPS):
    index = rng.choice(len(labels), BATCH, replace=False)
    model, opt_state, loss_value = make_step(model, opt_state, images[index], labels[index])
    losses.append(float(loss_value))
accuracy = eqx.filter_jit(lambda model, x, y: jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=1) == y))
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {STEPS} steps, "
      f"accuracy {float(accuracy(model, images, labels)):.3f}")
