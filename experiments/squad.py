"""SQuAD v1.1 extractive QA: loading, article splits, tokenisation into model inputs, the span loss, span decoding,
metrics.

Pipeline: ``articles = load_squad(path)`` -> ``train, test = split_by_article(articles, ...)`` ->
``examples = to_examples(train)`` -> ``features = featurize(examples, tokenizer, max_length)`` ->
model logits -> ``predictions = predict_answers(examples, features, start_logits, end_logits)`` ->
``evaluate(examples, predictions)``. The metrics are those of the official ``evaluate-v1.1.py``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
import string
import zipfile
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from tokenizers import Tokenizer

import kfac_thermo

_PUNCTUATION = frozenset(string.punctuation)
_CHUNK = 256


class SquadExample(NamedTuple):
    """One question. ``answers[k]`` starts at character ``answer_starts[k]`` of ``context``."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def load_squad(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The articles (``{"title", "paragraphs": [{"context", "qas": [...]}]}``) of a SQuAD v1.1 file.

    ``path`` is the JSON file or a zip holding exactly one ``.json`` member. Raises FileNotFoundError when the
    file is missing and ValueError when it is not SQuAD-shaped JSON or an answer's text is not at its
    ``answer_start`` in the context (the message says what is wrong where: the question id).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file {path} does not exist")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith(".json")]
                if len(members) != 1:
                    raise ValueError(f"zip {path} must hold exactly one .json file, found {members}")
                data = json.loads(archive.read(members[0]))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'data' list of articles")
    for a, article in enumerate(data["data"]):
        where = f"{path}: data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise ValueError(f"{where} has no 'paragraphs' list")
        for p, paragraph in enumerate(article["paragraphs"]):
            if not isinstance(paragraph.get("context"), str) or not isinstance(paragraph.get("qas"), list):
                raise ValueError(f"{where}.paragraphs[{p}] needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                if not all(k in qa for k in ("id", "question", "answers")) or not all(
                    "text" in ans and "answer_start" in ans for ans in qa["answers"]
                ):
                    raise ValueError(f"{where}.paragraphs[{p}].qas[{q}] needs 'id', 'question' and 'answers' "
                                     "with 'text' and 'answer_start'")
                for answer in qa["answers"]:
                    begin, text = answer["answer_start"], answer["text"]
                    found = paragraph["context"][begin:begin + len(text)] if isinstance(begin, int) else None
                    if found != text:
                        raise ValueError(f"{path}: question {qa['id']!r}: answer {text!r} is not at its "
                                         f"answer_start {begin} (the context has {found!r} there)")
    return data["data"]


def split_by_article(articles: Sequence[dict], num_train: int, num_test: int, seed: int) -> tuple[list, list]:
    """Disjoint random ``(train, test)`` article lists of the given sizes (no article's questions in both)."""
    if num_train < 0 or num_test < 0 or num_train + num_test > len(articles):
        raise ValueError(f"cannot take {num_train} train + {num_test} test articles from {len(articles)}")
    order = np.random.default_rng(seed).permutation(len(articles))
    return ([articles[i] for i in order[:num_train]],
            [articles[i] for i in order[num_train:num_train + num_test]])


def to_examples(articles: Sequence[dict]) -> list[SquadExample]:
    """Every question of ``articles``, in file order."""
    return [
        SquadExample(qa["id"], qa["question"], paragraph["context"], tuple(a["text"] for a in qa["answers"]),
                     tuple(int(a["answer_start"]) for a in qa["answers"]))
        for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]
    ]


@dataclasses.dataclass(frozen=True)
class Features:
    """Tokenised windows (``n`` rows of length ``max_length``), numpy arrays.

    Attributes:
        input_ids, attention_mask, token_type_ids: int32 ``[n, L]``; padding has id 0 and mask 0.
        start_positions, end_positions: int32 ``[n]``, token indices of the first answer's first and last
            token; 0 (the ``[CLS]`` position) when that answer is not inside the window.
        answer_in_window: bool ``[n]``, whether the first answer lies wholly inside the window.
        offsets: int32 ``[n, L, 2]``, character span ``[start, end)`` of each token in the context
            (``(0, 0)`` for question, special and padding tokens).
        context_mask: bool ``[n, L]``, True on context tokens (the only allowed answer tokens).
        example_index: int32 ``[n]``, the example each window came from.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    answer_in_window: np.ndarray
    offsets: np.ndarray
    context_mask: np.ndarray
    example_index: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, index) -> Features:
        """The rows ``index`` (a boolean mask or integer indices), e.g. ``f.select(f.answer_in_window)``."""
        return Features(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def inputs(self, index=slice(None)) -> dict[str, np.ndarray]:
        """The ``inputs`` dict of :func:`experiments.lora.split_trainable`'s ``predict_fn`` for rows ``index``."""
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "token_type_ids": self.token_type_ids[index]}


def featurize(examples: Sequence[SquadExample], tokenizer: Tokenizer, max_length: int,
              doc_stride: int | None = None) -> Features:
    """Tokenise ``[CLS] question [SEP] context [SEP]`` pairs, truncating only the context.

    Args:
        examples: from :func:`to_examples`.
        tokenizer: a ``tokenizers.Tokenizer`` (e.g. ``Tokenizer.from_file("tokenizer.json")``) whose pair
            template adds the special tokens; its own truncation and padding settings are ignored (a copy is used).
        max_length: tokens per window, including question and special tokens.
        doc_stride: None keeps only the first window of each context (the rest is cut). An integer also emits
            further windows overlapping the previous one by ``doc_stride`` context tokens (Hugging Face
            ``run_qa``'s ``doc_stride``) until the context is covered.

    Labels follow the first answer, located from character offsets. A window that does not hold it wholly
    gets start = end = 0 (``[CLS]``) and ``answer_in_window`` False: for training drop those rows
    (``features.select(features.answer_in_window)``); for evaluation keep every window and let
    :func:`predict_answers` take the best span over an example's windows.
    """
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    encodings = tok.encode_batch([(ex.question, ex.context) for ex in examples])
    rows: dict[str, list] = collections.defaultdict(list)
    for e, (ex, enc) in enumerate(zip(examples, encodings)):
        sequence = np.array([-1 if s is None else s for s in enc.sequence_ids])
        context = np.flatnonzero(sequence == 1)
        other = np.flatnonzero(sequence != 1)
        capacity = max_length - len(other)
        if capacity < 1 or len(context) == 0:
            raise ValueError(f"example {ex.id}: question and special tokens take {len(other)} of max_length "
                             f"{max_length} tokens, context has {len(context)}: no room for context")
        ids, types, offsets = np.array(enc.ids), np.array(enc.type_ids), np.array(enc.offsets).reshape(-1, 2)
        starts = [0]
        if doc_stride is not None:
            if not 0 <= doc_stride < capacity:
                raise ValueError(f"doc_stride {doc_stride} must be in [0, {capacity}) for example {ex.id}")
            while starts[-1] + capacity < len(context):
                starts.append(starts[-1] + capacity - doc_stride)
        for start in starts:
            window = context[start:start + capacity]
            keep = np.sort(np.concatenate([other, window]))
            in_context = sequence[keep] == 1
            token_offsets = np.where(in_context[:, None], offsets[keep], 0)
            start_pos = end_pos = 0
            found = False
            if ex.answers:
                begin = ex.answer_starts[0]
                end = begin + len(ex.answers[0])
                window_offsets = offsets[window]
                if window_offsets[0, 0] <= begin and window_offsets[-1, 1] >= end:
                    first = np.flatnonzero(window_offsets[:, 0] <= begin)[-1]
                    last = np.flatnonzero(window_offsets[:, 1] >= end)[0]
                    start_pos, end_pos = np.searchsorted(keep, window[[first, last]])
                    found = True
            pad = max_length - len(keep)
            rows["input_ids"].append(np.pad(ids[keep], (0, pad)))
            rows["attention_mask"].append(np.pad(np.ones(len(keep), int), (0, pad)))
            rows["token_type_ids"].append(np.pad(types[keep], (0, pad)))
            rows["offsets"].append(np.pad(token_offsets, ((0, pad), (0, 0))))
            rows["context_mask"].append(np.pad(in_context, (0, pad)))
            rows["start_positions"].append(start_pos)
            rows["end_positions"].append(end_pos)
            rows["answer_in_window"].append(found)
            rows["example_index"].append(e)
    dtypes = {"context_mask": bool, "answer_in_window": bool}
    return Features(**{name: np.asarray(rows[name], dtypes.get(name, np.int32)) for name in
                       (f.name for f in dataclasses.fields(Features))})


class SpanCrossEntropy(kfac_thermo.Loss):
    """The extractive-QA loss on one window: outputs ``[start logits; end logits]`` (2 s), target the integer
    ``(start, end)`` positions; the mean of the two softmax cross-entropies.

    Its output Hessian is block diagonal, half of each softmax's, so ``L = blockdiag(L_start, L_end) / sqrt(2)``
    (rank 2 (s - 1), from :meth:`kfac_thermo.SoftmaxCrossEntropy.hessian_factor`); the predictive distribution
    draws the start and the end independently.
    """

    def __call__(self, z: Float[Array, " two_s"], y: Int[Array, "2"]) -> Float[Array, ""]:
        log_p = jax.nn.log_softmax(z.reshape(2, -1), axis=-1)
        return -0.5 * (log_p[0, y[0]] + log_p[1, y[1]])

    def hessian_factor(self, z, y=None):
        start, end = z.reshape(2, -1)
        softmax = kfac_thermo.SoftmaxCrossEntropy()
        return jax.scipy.linalg.block_diag(softmax.hessian_factor(start), softmax.hessian_factor(end)) / jnp.sqrt(2.0)

    def sample_target(self, key: PRNGKeyArray, z):
        return jax.random.categorical(key, z.reshape(2, -1), axis=-1)

    def check_targets(self, outputs, targets):
        if not (targets.shape == (2,) and jnp.issubdtype(targets.dtype, jnp.integer) and outputs.shape[0] % 2 == 0):
            raise self._mismatch(outputs, targets, "(2,) integer (start, end) positions for an even number of "
                                 "outputs [start logits; end logits]")


def best_span(start_logits: Float[Array, " s"], end_logits: Float[Array, " s"], max_answer_length: int = 30,
              *, mask: Array | None = None) -> tuple[Int[Array, ""], Int[Array, ""], Float[Array, ""]]:
    """``(start, end, score)`` maximising ``start_logits[i] + end_logits[j]`` over ``i <= j < i + max_answer_length``
    (and, given ``mask``, over allowed tokens only). One example; ``jax.vmap`` for a batch."""
    s = start_logits.shape[0]
    i, j = jnp.arange(s)[:, None], jnp.arange(s)[None, :]
    allowed = (j >= i) & (j - i < max_answer_length)
    if mask is not None:
        allowed = allowed & mask[:, None] & mask[None, :]
    scores = jnp.where(allowed, start_logits[:, None] + end_logits[None, :], -jnp.inf)
    flat = jnp.argmax(scores)
    return flat // s, flat % s, scores.reshape(-1)[flat]


def predict_answers(examples: Sequence[SquadExample], features: Features, start_logits: Float[Array, "n s"],
                    end_logits: Float[Array, "n s"], max_answer_length: int = 30) -> dict[str, str]:
    """``{example id: answer text}``: the best context span over each example's windows, cut from its context
    by the token offsets. Examples without a window are left out (the official metric scores them 0)."""
    spans = jax.jit(jax.vmap(lambda s, e, m: best_span(s, e, max_answer_length, mask=m)))
    chunks = [spans(start_logits[i:i + _CHUNK], end_logits[i:i + _CHUNK], features.context_mask[i:i + _CHUNK])
              for i in range(0, len(features), _CHUNK)]  # bounded memory: each row scores s x s spans
    starts, ends, scores = (np.concatenate([np.asarray(c[k]) for c in chunks]) for k in range(3))
    best: dict[int, tuple[float, str]] = {}
    for row, e in enumerate(features.example_index):
        text = examples[e].context[features.offsets[row, starts[row], 0]:features.offsets[row, ends[row], 1]]
        if e not in best or scores[row] > best[e][0]:
            best[e] = (float(scores[row]), text)
    return {examples[e].id: text for e, (_, text) in best.items()}


def normalize_answer(text: str) -> str:
    """Official SQuAD normalisation: lower case, drop punctuation, drop articles a/an/the, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    predicted, true = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((collections.Counter(predicted) & collections.Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised ground truth, else 0.0."""
    return float(max(normalize_answer(prediction) == normalize_answer(t) for t in ground_truths))


def f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Best bag-of-tokens F1 of the normalised prediction against the ground truths."""
    return max(_f1(prediction, t) for t in ground_truths)


def evaluate(examples: Sequence[SquadExample], predictions: dict[str, str]) -> dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over ``examples``; an unanswered example scores 0 (as officially)."""
    em = f = 0.0
    for ex in examples:
        if ex.id in predictions:
            em += exact_match(predictions[ex.id], ex.answers)
            f += f1(predictions[ex.id], ex.answers)
    total = max(len(examples), 1)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f / total}
