"""LoRA adapters: exact at initialisation, add (alpha/r) B A x, and only adapters + span head train."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from experiments.encoder import Encoder, EncoderConfig, QAModel
from experiments.lora import LoRALinear, add_lora, lora_layers, split_trainable, trainable_filter


def config(hidden=16, layers=2, heads=2, ffn=24, model_type="bert"):
    return EncoderConfig(model_type, vocab_size=50, hidden_size=hidden, num_layers=layers, num_heads=heads,
                         intermediate_size=ffn, max_position_embeddings=32,
                         type_vocab_size=2 if model_type == "bert" else 0, layer_norm_eps=1e-12, activation="gelu")


def tiny_qa(seed=0):
    k1, k2 = jr.split(jr.key(seed))
    return QAModel(Encoder(config(), key=k1), key=k2)


def batch(b=3, s=10, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((b, s), np.int32)
    mask[0, -4:] = 0
    types = np.broadcast_to((np.arange(s) >= 4).astype(np.int32), (b, s))
    return {"input_ids": jnp.asarray(rng.integers(0, 50, (b, s)), jnp.int32), "attention_mask": jnp.asarray(mask),
            "token_type_ids": jnp.asarray(types)}


def reference_logits(model, inputs):
    one = lambda i, m, t: jnp.concatenate(model(i, m, t))
    return jax.vmap(one)(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])


def test_zero_b_leaves_the_model_unchanged():
    model = tiny_qa()
    inputs = batch()
    trainable, frozen, make_predict_fn = split_trainable(add_lora(model, key=jr.key(1)))
    predict_fn = make_predict_fn(frozen)
    original = reference_logits(model, inputs)
    np.testing.assert_array_equal(predict_fn(trainable, inputs), original)
    # with a dropout key the adapter path is still multiplied by B = 0
    np.testing.assert_array_equal(predict_fn(trainable, inputs, key=jr.key(2)), original)


def test_adapter_adds_scaled_low_rank_update():
    k1, k2, k3, k4 = jr.split(jr.key(0), 4)
    base = eqx.nn.Linear(6, 5, key=k1)
    lora = LoRALinear(base, rank=2, alpha=32.0, dropout=0.1, key=k2)
    assert lora.lora_a.shape == (2, 6) and lora.lora_b.shape == (5, 2) and lora.scale == 16.0
    assert float(jnp.abs(lora.lora_a).max()) <= 1 / np.sqrt(6)  # U(-1/sqrt(in), 1/sqrt(in)), as peft's kaiming
    b = jr.normal(k3, (5, 2))
    lora = eqx.tree_at(lambda l: l.lora_b, lora, b)
    x = jr.normal(k4, (6,))
    want = base.weight @ x + base.bias + 16.0 * b @ (lora.lora_a @ x)
    np.testing.assert_allclose(lora(x), want, rtol=1e-6, atol=1e-5)


def test_dropout_acts_on_adapter_input_only():
    """With A = B = I the adapter returns scale * dropout(x): each entry 0 or x / (1 - p), the base is untouched."""
    n, p = 400, 0.25
    base = eqx.nn.Linear(n, n, key=jr.key(0))
    lora = LoRALinear(base, rank=n, alpha=n, dropout=p, key=jr.key(1))
    lora = eqx.tree_at(lambda l: (l.lora_a, l.lora_b), lora, (jnp.eye(n), jnp.eye(n)))
    x = jnp.linspace(1.0, 2.0, n)
    adapter = lora(x, key=jr.key(2)) - base(x)
    np.testing.assert_allclose(lora(x) - base(x), x, rtol=1e-5)  # no key: deterministic, no dropout
    kept = np.isclose(adapter, x / (1 - p), rtol=1e-4)
    dropped = np.abs(np.asarray(adapter)) < 1e-4
    assert np.all(kept | dropped)
    # dropped fraction ~ Binomial(n, p)/n: p +- 4 standard deviations
    assert abs(dropped.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert not np.array_equal(lora(x, key=jr.key(3)), lora(x, key=jr.key(2)))


def test_add_lora_wraps_exactly_the_attention_projections():
    adapted = add_lora(tiny_qa(), key=jr.key(1))
    for layer in adapted.encoder.layers:
        for name in ("query", "key", "value", "output"):
            assert isinstance(getattr(layer.attention, name), LoRALinear)
        assert isinstance(layer.ffn_in, eqx.nn.Linear) and isinstance(layer.ffn_out, eqx.nn.Linear)
    assert isinstance(adapted.span_head, eqx.nn.Linear)
    only_values = add_lora(tiny_qa(), key=jr.key(1), targets=("value",))
    assert len(lora_layers(only_values)) == 2
    by_path = add_lora(tiny_qa(), key=jr.key(1), targets=lambda path: path.endswith("ffn_in"))
    assert [type(l.ffn_in) for l in by_path.encoder.layers] == [LoRALinear, LoRALinear]
    with pytest.raises(ValueError, match="no eqx.nn.Linear matches"):
        add_lora(tiny_qa(), key=jr.key(1), targets=("nothing",))


def test_only_adapters_and_head_are_trainable():
    adapted = add_lora(tiny_qa(), key=jr.key(1))
    trainable, frozen, _ = split_trainable(adapted)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(trainable)[0]]
    assert all(p.endswith((".lora_a", ".lora_b")) or p.startswith(".span_head.") for p in paths)
    assert sum(p.startswith(".span_head.") for p in paths) == 2 and len(paths) == 2 * 8 + 2
    spec = trainable_filter(adapted)
    assert sum(jax.tree_util.tree_leaves(spec)) == len(paths)
    # the frozen half holds every other array, untouched
    assert eqx.tree_equal(eqx.combine(trainable, frozen), adapted)


def test_gradient_flows_to_adapters_under_jit_with_frozen_argument():
    adapted = with_random_b(add_lora(tiny_qa(), key=jr.key(1)), jr.key(5))
    trainable, frozen, make_predict_fn = split_trainable(adapted)
    inputs = batch()
    loss = lambda params, frozen: jnp.sum(jnp.tanh(make_predict_fn(frozen)(params, inputs)[:, :10]))
    value, grads = jax.jit(jax.value_and_grad(loss))(trainable, frozen)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
    np.testing.assert_allclose(value, jnp.sum(jnp.tanh(reference_logits(adapted, inputs)[:, :10])), rtol=1e-5)


def with_random_b(model, key):
    adapters = lora_layers(model)
    new = [jr.normal(k, a.lora_b.shape) for a, k in zip(adapters, jr.split(key, len(adapters)))]
    return eqx.tree_at(lambda m: [a.lora_b for a in lora_layers(m)], model, new)


@pytest.mark.parametrize("hidden,layers,expected", [
    (16, 2, None),
    (384, 6, 37_634),  # all-MiniLM-L6-v2
    (768, 6, 75_266),  # DistilBERT-base: the paper's "about 75k trainable parameters"
])
def test_trainable_count_formula(hidden, layers, expected):
    """``layers * 4 projections * r (in + out) + span head (2 hidden + 2)`` at r = 2."""
    cfg = config(hidden=hidden, layers=layers, heads=2, ffn=4 * hidden)
    build = lambda key: add_lora(QAModel(Encoder(cfg, key=key), key=key), key=key, rank=2)
    model = eqx.filter_eval_shape(build, jr.key(0))
    trainable, _, _ = split_trainable(model)
    formula = layers * 4 * 2 * (hidden + hidden) + 2 * hidden + 2
    assert sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(trainable)) == formula
    if expected is not None:
        assert formula == expected
