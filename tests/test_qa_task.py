"""The QA fine-tuning pipeline end to end: a tiny random encoder checkpoint, a few SQuAD paragraphs, the runner."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from experiments import rundir
from experiments.run import run
from test_encoder import HIDDEN, hf_config, hf_weights, write_checkpoint
from test_runner import CONFIGS
from test_squad import tiny_tokenizer

ARTICLES = [
    ("Normans", "The Normans were the people who gave their name to Normandy, a region in France. Their "
                "leader Rollo swore fealty to King Charles the third of West Francia.",
     [("Who gave their name to Normandy?", "The Normans"), ("Where is Normandy?", "France"),
      ("Who was the leader of the Normans?", "Rollo")]),
    ("Rivers", "The Rhine flows from the Swiss Alps to the North Sea. It passes through Germany and the "
               "Netherlands and is one of the longest rivers of Europe.",
     [("Where does the Rhine start?", "the Swiss Alps"), ("Where does the Rhine end?", "the North Sea"),
      ("Which country does the Rhine pass through?", "Germany")]),
    ("Physics", "Energy is conserved in a closed system. The unit of energy is the joule, named after James "
                "Prescott Joule, who studied heat.",
     [("What is conserved in a closed system?", "Energy"), ("What is the unit of energy?", "the joule"),
      ("What did Joule study?", "heat")]),
]


def squad_json(path):
    data = []
    for a, (title, context, qas) in enumerate(ARTICLES):
        entries = [{"id": f"{a}-{i}", "question": q, "answers": [{"text": ans, "answer_start": context.index(ans)}]}
                   for i, (q, ans) in enumerate(qas)]
        data.append({"title": title, "paragraphs": [{"context": context, "qas": entries}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}))


def tiny_model_dir(directory):
    tokenizer = tiny_tokenizer([t for _, c, qas in ARTICLES for t in [c, *[q for q, _ in qas]]])
    weights = hf_weights("bert", np.random.default_rng(0))
    vocab = tokenizer.get_vocab_size()
    rng = np.random.default_rng(1)
    weights["embeddings.word_embeddings.weight"] = rng.normal(0, 1, (vocab, HIDDEN)).astype(np.float32)
    weights["embeddings.position_embeddings.weight"] = rng.normal(0, 1, (64, HIDDEN)).astype(np.float32)
    write_checkpoint(directory, "bert", weights)
    config = hf_config("bert") | {"vocab_size": vocab, "max_position_embeddings": 64}
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save(str(directory / "tokenizer.json"))


@pytest.mark.parametrize("optimizer", ["tngd_adam", "adam"])
def test_qa_pipeline_runs_end_to_end(tmp_path, optimizer):
    squad_json(tmp_path / "squad.json")
    tiny_model_dir(tmp_path / "model")
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=[
            "+experiment=quick_squad", f"optimizer={optimizer}", f"task.data_path={tmp_path / 'squad.json'}",
            f"task.model_dir={tmp_path / 'model'}", "task.train_articles=2", "task.test_articles=1",
            "task.max_length=48", "task.batch_size=2", "task.epochs=2", "run.eval_every=2",
            "run.progress=false", "run.plots=false"])
    summary = run(cfg, str(tmp_path / "run"))
    records = rundir.read_metrics(str(tmp_path / "run"))
    assert summary["metric"] == "test_f1" and summary["steps"] == 6  # 6 train questions / batch 2 x 2 epochs
    assert records[0]["step"] == 0 and "test_f1" in records[0]  # the evaluation before any update
    assert all(np.isfinite(r["train_loss"]) for r in records[1:])
    evals = [r for r in records if "test_f1" in r]
    assert evals and all(0.0 <= r["test_f1"] <= 100.0 and 0.0 <= r["test_exact_match"] <= r["test_f1"] + 1e-9
                         for r in evals)
    assert "2 articles" in summary["task"] and "1 other articles" in summary["task"]
