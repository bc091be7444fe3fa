"""A flax linen model trained with K-FAC on scikit-learn's digits.

linen keeps parameters apart from the model, so ``predict_fn`` is ``model.apply`` on them; ``example_inputs`` (which
K-FAC traces once to find its layers) may be a ``jax.ShapeDtypeStruct`` instead of a batch. ``nn.Dense`` layers
become Kronecker blocks (``kfac_thermo.kfac_blocks`` prints which).

Run: ``python examples/flax_linen_kfac.py`` (``EXAMPLE_STEPS=20`` for a quick run).
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import kfac_thermo

STEPS = int(os.environ.get("EXAMPLE_STEPS", 300))
BATCH = 64


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


images, labels = load_digits(return_X_y=True)
images, labels = (images / 16.0).astype(np.float32), labels.astype(np.int32)
model = MLP()
params = model.init(jax.random.key(0), images[:1])["params"]
predict_fn = lambda params, x: model.apply({"params": params}, x)
example_inputs = jax.ShapeDtypeStruct((BATCH, 64), jnp.float32)
print(kfac_thermo.kfac_blocks(predict_fn, params, example_inputs))

optimizer = kfac_thermo.kfac(0.1, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=1e-2,
                             example_inputs=example_inputs, curvature_period=5, inverse_period=5)
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, x, y):
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(predict_fn(p, x), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params, batch=(x, y))
    return optax.apply_updates(params, updates), opt_state, loss


rng = np.random.default_rng(1)
losses = []
for step in range(STEPS):
    index = rng.choice(len(labels), BATCH, replace=False)
    params, opt_state, loss = train_step(params, opt_state, images[index], labels[index])
    losses.append(float(loss))
accuracy = jax.jit(lambda p: jnp.mean(jnp.argmax(predict_fn(p, images), axis=1) == labels))(params)
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {STEPS} steps, accuracy {float(accuracy):.3f}")
