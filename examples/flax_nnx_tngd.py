"""A flax nnx model trained with TNGD on scikit-learn's digits, through ``nnx.Optimizer``.

nnx keeps parameters in the model: ``nnx.split`` gives the graph definition once, and ``predict_fn`` merges it
with the parameters the optimizer is given. ``nnx.Optimizer.update(model, grads, batch=...)`` passes extra
keyword arguments through to the transformation, so the loop is nnx's own.

Run: ``python examples/flax_nnx_tngd.py`` (``EXAMPLE_STEPS=20`` for a quick run).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import kfac_thermo

STEPS = int(os.environ.get("EXAMPLE_STEPS", 300))
BATCH = 64


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


images, labels = load_digits(return_X_y=True)
images, labels = (images / 16.0).astype(np.float32), labels.astype(np.int32)
model = MLP(nnx.Rngs(0))
graphdef, _ = nnx.split(model, nnx.Param)
predict_fn = lambda params, x: nnx.merge(graphdef, params)(x)

tx = kfac_thermo.tngd(0.2, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=0.1, t=20.0,
                      method="exact")
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss_fn = lambda model: optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads, batch=(x, y))
    return loss


rng = np.random.default_rng(1)
losses = []
for step in range(STEPS):
    index = rng.choice(len(labels), BATCH, replace=False)
    losses.append(float(train_step(model, optimizer, images[index], labels[index])))
accuracy = nnx.jit(lambda model: jnp.mean(jnp.argmax(model(images), axis=1) == labels))(model)
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {STEPS} steps, accuracy {float(accuracy):.3f}")
