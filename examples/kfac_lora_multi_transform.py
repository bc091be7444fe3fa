"""K-FAC on LoRA adapters and Adam on the classifier head, with ``optax.multi_transform``, on scikit-learn's digits.

A frozen base MLP (closed over: not a parameter) gets a low-rank adapter ``x A B`` beside each hidden layer; the
adapters' products are dense layers, which K-FAC factors; the head is trained by Adam. ``multi_transform`` hides
the other branch's parameters from each branch (as ``optax.MaskedNode``), so the K-FAC branch is given the whole
model's parameters: ``example_params=params`` at construction (its ``init`` traces the model) and
``model_params=params`` in ``update``. Labels may be a prefix of the parameters, as here.

Run: ``python examples/kfac_lora_multi_transform.py`` (``EXAMPLE_STEPS=20`` for a quick run).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import kfac_thermo

STEPS = int(os.environ.get("EXAMPLE_STEPS", 300))
BATCH, WIDTH, RANK = 64, 32, 4

rng = np.random.default_rng(0)
images, labels = load_digits(return_X_y=True)
images, labels = (images / 16.0).astype(np.float32), labels.astype(np.int32)
normal = lambda *shape: (rng.normal(size=shape) / np.sqrt(shape[0])).astype(np.float32)
base = [normal(64, WIDTH), normal(WIDTH, WIDTH)]  # frozen "pretrained" weights
params = {
    "adapters": [{"A": normal(n, RANK), "B": np.zeros((RANK, WIDTH), np.float32)} for n in (64, WIDTH)],
    "head": {"w": normal(WIDTH, 10), "b": np.zeros(10, np.float32)},
}


def predict_fn(params, x):
    for w, adapter in zip(base, params["adapters"]):
        x = jnp.tanh(x @ w + (x @ adapter["A"]) @ adapter["B"])
    return x @ params["head"]["w"] + params["head"]["b"]


kfac = kfac_thermo.kfac(0.05, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=1e-2,
                        example_inputs=images[:BATCH], example_params=params)
optimizer = optax.multi_transform({"kfac": kfac, "adam": optax.adam(1e-2)}, {"adapters": "kfac", "head": "adam"})
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, x, y):
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(predict_fn(p, x), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params, batch=(x, y), model_params=params)
    return optax.apply_updates(params, updates), opt_state, loss


losses = []
for step in range(STEPS):
    index = rng.choice(len(labels), BATCH, replace=False)
    params, opt_state, loss = train_step(params, opt_state, images[index], labels[index])
    losses.append(float(loss))
accuracy = jax.jit(lambda p: jnp.mean(jnp.argmax(predict_fn(p, images), axis=1) == labels))(params)
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {STEPS} steps, accuracy {float(accuracy):.3f}")
