"""A BERT-family encoder (BERT / MiniLM and DistilBERT layouts) in equinox, loaded from Hugging Face files.

The forward pass is BERT's: ``LayerNorm(word + position [+ token type])`` embeddings, then per layer
``h = LayerNorm(x + Attention(x))`` and ``out = LayerNorm(h + W2 act(W1 h))`` (post-LN), with multi-head
self-attention ``softmax(q k^T / sqrt(d_head))`` over the non-padding keys. Dropout of the encoder itself is not
modelled (the forward pass is deterministic); the LoRA adapters of :mod:`experiments.lora` carry their own.
Every dense product is an ``eqx.nn.Linear`` applied token by token, so adapters can wrap the attention
projections and ``kfac_thermo`` sees each one as a single ``dot_general`` with a parameter operand.

Pretrained weights come from a directory holding ``config.json`` and ``model.safetensors``
(:func:`load_pretrained`); :class:`QAModel` adds the span head of extractive question answering.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from safetensors.numpy import load_file

SUPPORTED_MODEL_TYPES = ("bert", "distilbert")
MASKED_LOGIT = -1e9  # span logit of a padding position: zero probability, finite arithmetic
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # Hugging Face "gelu" is the exact erf form
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT-family encoder, in one vocabulary for both layouts.

    ``type_vocab_size == 0`` means no token-type embedding (DistilBERT).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    activation: str

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation {self.activation!r}; supported: {tuple(_ACTIVATIONS)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> EncoderConfig:
        """Read a Hugging Face ``config.json`` dictionary (``model_type`` "bert" or "distilbert")."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unknown model_type {model_type!r} in config.json; supported: {SUPPORTED_MODEL_TYPES}")

        def need(name: str):
            if name not in hf:
                raise ValueError(f"config.json of a {model_type} model lacks {name!r}")
            return hf[name]

        if model_type == "bert":
            position_type = hf.get("position_embedding_type", "absolute")
            if position_type != "absolute":
                raise ValueError(f"position_embedding_type {position_type!r} is not supported (only 'absolute')")
            return cls(model_type, need("vocab_size"), need("hidden_size"), need("num_hidden_layers"),
                       need("num_attention_heads"), need("intermediate_size"), need("max_position_embeddings"),
                       need("type_vocab_size"), float(hf.get("layer_norm_eps", 1e-12)), need("hidden_act"))
        # DistilBERT: fixed LayerNorm eps 1e-12, no token types; sinusoidal position tables are stored as weights.
        return cls(model_type, need("vocab_size"), need("dim"), need("n_layers"), need("n_heads"),
                   need("hidden_dim"), need("max_position_embeddings"), 0, 1e-12, need("activation"))


def _over_tokens(linear: Callable, x: Float[Array, "s d"], key: PRNGKeyArray | None) -> Array:
    """Apply a per-vector layer to every token; a key (for adapter dropout) is split across tokens."""
    if key is None:
        return jax.vmap(linear)(x)
    return jax.vmap(lambda xi, ki: linear(xi, key=ki))(x, jr.split(key, x.shape[0]))


def _split(key: PRNGKeyArray | None, n: int) -> list:
    return [None] * n if key is None else list(jr.split(key, n))


class Embeddings(eqx.Module):
    """``LayerNorm(word[ids] + position[0..s-1] (+ token_type[types]))``."""

    word: eqx.nn.Embedding
    position: eqx.nn.Embedding
    token_type: eqx.nn.Embedding | None
    norm: eqx.nn.LayerNorm

    def __init__(self, config: EncoderConfig, *, key: PRNGKeyArray, dtype=jnp.float32):
        k1, k2, k3 = jr.split(key, 3)
        h = config.hidden_size
        self.word = eqx.nn.Embedding(config.vocab_size, h, key=k1, dtype=dtype)
        self.position = eqx.nn.Embedding(config.max_position_embeddings, h, key=k2, dtype=dtype)
        self.token_type = (eqx.nn.Embedding(config.type_vocab_size, h, key=k3, dtype=dtype)
                           if config.type_vocab_size else None)
        self.norm = eqx.nn.LayerNorm(h, eps=config.layer_norm_eps, dtype=dtype)

    def __call__(self, input_ids: Int[Array, " s"], token_type_ids: Int[Array, " s"] | None) -> Float[Array, "s h"]:
        length, limit = input_ids.shape[0], self.position.weight.shape[0]
        if length > limit:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings {limit}")
        x = self.word.weight[input_ids] + self.position.weight[:length]
        if self.token_type is not None:
            types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type.weight[types]
        return jax.vmap(self.norm)(x)


class SelfAttention(eqx.Module):
    """Multi-head self-attention with ``query``, ``key``, ``value`` and ``output`` projections."""

    query: eqx.nn.Linear
    key: eqx.nn.Linear
    value: eqx.nn.Linear
    output: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, hidden: int, num_heads: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        kq, kk, kv, ko = jr.split(key, 4)
        self.query = eqx.nn.Linear(hidden, hidden, key=kq, dtype=dtype)
        self.key = eqx.nn.Linear(hidden, hidden, key=kk, dtype=dtype)
        self.value = eqx.nn.Linear(hidden, hidden, key=kv, dtype=dtype)
        self.output = eqx.nn.Linear(hidden, hidden, key=ko, dtype=dtype)
        self.num_heads = num_heads

    def __call__(self, x: Float[Array, "s h"], mask: Array, *, key: PRNGKeyArray | None = None) -> Float[Array, "s h"]:
        kq, kk, kv, ko = _split(key, 4)
        s, h = x.shape
        heads = lambda y: y.reshape(s, self.num_heads, h // self.num_heads)
        q = heads(_over_tokens(self.query, x, kq))
        k = heads(_over_tokens(self.key, x, kk))
        v = heads(_over_tokens(self.value, x, kv))
        scores = jnp.einsum("qnd,knd->nqk", q, k) / jnp.sqrt(jnp.asarray(h // self.num_heads, x.dtype))
        scores = jnp.where(mask[None, None, :], scores, jnp.finfo(scores.dtype).min)
        context = jnp.einsum("nqk,knd->qnd", jax.nn.softmax(scores, axis=-1), v).reshape(s, h)
        return _over_tokens(self.output, context, ko)


class TransformerLayer(eqx.Module):
    """Post-LN transformer layer: ``h = LN(x + Attn(x))``, ``LN(h + ffn_out(act(ffn_in(h))))``."""

    attention: SelfAttention
    attention_norm: eqx.nn.LayerNorm
    ffn_in: eqx.nn.Linear
    ffn_out: eqx.nn.Linear
    output_norm: eqx.nn.LayerNorm
    activation: str = eqx.field(static=True)

    def __init__(self, config: EncoderConfig, *, key: PRNGKeyArray, dtype=jnp.float32):
        ka, k1, k2 = jr.split(key, 3)
        h, eps = config.hidden_size, config.layer_norm_eps
        self.attention = SelfAttention(h, config.num_heads, key=ka, dtype=dtype)
        self.attention_norm = eqx.nn.LayerNorm(h, eps=eps, dtype=dtype)
        self.ffn_in = eqx.nn.Linear(h, config.intermediate_size, key=k1, dtype=dtype)
        self.ffn_out = eqx.nn.Linear(config.intermediate_size, h, key=k2, dtype=dtype)
        self.output_norm = eqx.nn.LayerNorm(h, eps=eps, dtype=dtype)
        self.activation = config.activation

    def __call__(self, x: Float[Array, "s h"], mask: Array, *, key: PRNGKeyArray | None = None) -> Float[Array, "s h"]:
        x = jax.vmap(self.attention_norm)(x + self.attention(x, mask, key=key))
        y = jax.vmap(self.ffn_out)(_ACTIVATIONS[self.activation](jax.vmap(self.ffn_in)(x)))
        return jax.vmap(self.output_norm)(x + y)


class Encoder(eqx.Module):
    """Embeddings and ``num_layers`` transformer layers; ``__call__`` maps one sequence to hidden states.

    Built with equinox's default initialisation; :func:`load_pretrained` fills in Hugging Face weights.
    """

    embeddings: Embeddings
    layers: tuple[TransformerLayer, ...]

    def __init__(self, config: EncoderConfig, *, key: PRNGKeyArray, dtype=jnp.float32):
        ke, *kl = jr.split(key, config.num_layers + 1)
        self.embeddings = Embeddings(config, key=ke, dtype=dtype)
        self.layers = tuple(TransformerLayer(config, key=k, dtype=dtype) for k in kl)

    def __call__(
        self,
        input_ids: Int[Array, " s"],
        attention_mask: Int[Array, " s"] | None = None,
        token_type_ids: Int[Array, " s"] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "s h"]:
        """Hidden states of one sequence. ``attention_mask`` is 1 on real tokens and 0 on padding (default: all
        real); ``token_type_ids`` are ignored by the DistilBERT layout. ``key`` drives adapter dropout
        (None: deterministic)."""
        mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool)
        x = self.embeddings(input_ids, token_type_ids)
        for layer, k in zip(self.layers, _split(key, len(self.layers))):
            x = layer(x, mask, key=k)
        return x


class QAModel(eqx.Module):
    """Encoder plus a ``Linear(hidden, 2)`` span head: start and end logits of extractive QA.

    The head is initialised as in Hugging Face (weights ``N(0, init_std^2)``, bias 0). Batches go through
    ``jax.vmap``; :func:`experiments.lora.split_trainable` gives the batched ``predict_fn``.
    """

    encoder: Encoder
    span_head: eqx.nn.Linear

    def __init__(self, encoder: Encoder, *, key: PRNGKeyArray, init_std: float = 0.02):
        hidden = encoder.embeddings.word.weight.shape[1]
        dtype = encoder.embeddings.word.weight.dtype
        head = eqx.filter_eval_shape(eqx.nn.Linear, hidden, 2, key=key, dtype=dtype)
        self.encoder = encoder
        self.span_head = eqx.tree_at(lambda l: (l.weight, l.bias), head,
                                     (init_std * jr.normal(key, (2, hidden), dtype), jnp.zeros(2, dtype)))

    def __call__(
        self,
        input_ids: Int[Array, " s"],
        attention_mask: Int[Array, " s"],
        token_type_ids: Int[Array, " s"] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " s"], Float[Array, " s"]]:
        """``(start_logits, end_logits)`` of ONE example; padding positions get :data:`MASKED_LOGIT`."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, key=key)
        logits = jax.vmap(self.span_head)(hidden)
        logits = jnp.where(attention_mask.astype(bool)[:, None], logits, MASKED_LOGIT)
        return logits[:, 0], logits[:, 1]


def _layer_names(config: EncoderConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(embedding, per-layer) maps from module paths to Hugging Face names, without the ``.weight`` suffix."""
    if config.model_type == "bert":
        embeddings = {"embeddings.word": "embeddings.word_embeddings",
                      "embeddings.position": "embeddings.position_embeddings",
                      "embeddings.token_type": "embeddings.token_type_embeddings",
                      "embeddings.norm": "embeddings.LayerNorm"}
        layer = {"attention.query": "attention.self.query", "attention.key": "attention.self.key",
                 "attention.value": "attention.self.value", "attention.output": "attention.output.dense",
                 "attention_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
                 "ffn_out": "output.dense", "output_norm": "output.LayerNorm"}
        return embeddings, {k: f"encoder.layer.{{i}}.{v}" for k, v in layer.items()}
    embeddings = {"embeddings.word": "embeddings.word_embeddings",
                  "embeddings.position": "embeddings.position_embeddings",
                  "embeddings.norm": "embeddings.LayerNorm"}
    layer = {"attention.query": "attention.q_lin", "attention.key": "attention.k_lin",
             "attention.value": "attention.v_lin", "attention.output": "attention.out_lin",
             "attention_norm": "sa_layer_norm", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2",
             "output_norm": "output_layer_norm"}
    return embeddings, {k: f"transformer.layer.{{i}}.{v}" for k, v in layer.items()}


def _getter(path: str) -> Callable[[Any], Any]:
    def get(obj):
        for part in path.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        return obj

    return get


def _hf_weight_map(config: EncoderConfig) -> dict[str, str]:
    """Hugging Face tensor name (without model prefix) -> attribute path in :class:`Encoder`, for every weight."""
    embeddings, layer = _layer_names(config)
    modules = dict((hf, ours) for ours, hf in embeddings.items())
    for i in range(config.num_layers):
        modules.update((hf.format(i=i), f"layers.{i}.{ours}") for ours, hf in layer.items())
    weights = {}
    for hf, ours in modules.items():
        params = ("weight",) if ours.startswith("embeddings.") and not ours.endswith("norm") else ("weight", "bias")
        weights.update((f"{hf}.{p}", f"{ours}.{p}") for p in params)
    return weights


def load_pretrained(directory: str | pathlib.Path, *, dtype=jnp.float32) -> tuple[Encoder, EncoderConfig]:
    """Encoder with the weights of a Hugging Face BERT / MiniLM / DistilBERT checkpoint.

    ``directory`` holds ``config.json`` and ``model.safetensors``. Tensor names may carry the task-model prefix
    (``bert.`` / ``distilbert.``); tensors the encoder does not use (pooler, task heads, ``position_ids``) are
    ignored. Raises FileNotFoundError for a missing directory or file, ValueError for an unsupported config, a
    weight that is missing (all missing names are listed) or of the wrong shape.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"pretrained model directory {directory} does not exist")
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} has no {name} (need config.json and model.safetensors)")
    config = EncoderConfig.from_hf(json.loads((directory / "config.json").read_text()))
    tensors = load_file(str(directory / "model.safetensors"))

    names = _hf_weight_map(config)
    first = next(iter(names))
    prefix = next((p for p in ("", "bert.", "distilbert.") if p + first in tensors), "")
    missing = [prefix + hf for hf in names if prefix + hf not in tensors]
    if missing:
        raise ValueError(f"{directory / 'model.safetensors'} lacks {len(missing)} of the {len(names)} weights of a "
                         f"{config.model_type} encoder: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")

    skeleton = eqx.filter_eval_shape(Encoder, config, key=jr.key(0), dtype=dtype)
    getters, values = [], []
    for hf, ours in names.items():
        expected = _getter(ours)(skeleton).shape
        array = tensors[prefix + hf]
        if array.shape != expected:
            raise ValueError(f"weight {prefix + hf} has shape {array.shape}, expected {expected} from config.json")
        getters.append(_getter(ours))
        values.append(jnp.asarray(array.astype(np.dtype(dtype))))
    encoder = eqx.tree_at(lambda m: [get(m) for get in getters], skeleton, values)
    return encoder, config
