"""RetrievalEvalCallback inside a real (tiny) SentenceTransformerTrainer run: logs the metric, keeps the best."""

from __future__ import annotations

import json

import pytest

from embedkit.errors import ConfigError


def _pairs(beir_dir):
    from datasets import Dataset

    from embedkit.data.beir import load_beir

    data = load_beir(beir_dir)
    anchors, positives = [], []
    for qid, docs in data.qrels.items():
        anchors.append(data.queries[qid])
        positives.append(data.doc_text(next(iter(docs))))
    return Dataset.from_dict({"anchor": anchors[:24], "positive": positives[:24]})


def _trainer(model, out, train, steps, lr=5e-3):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=lr,
        logging_steps=100, save_strategy="no", report_to=[], seed=0, use_cpu=True, disable_tqdm=True)
    return SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                      loss=MultipleNegativesRankingLoss(model))


def test_callback_logs_every_step_and_keeps_best(tmp_path, tiny_bert, small_beir):
    from embedkit import load_model
    from embedkit.evaluation import RetrievalEvalCallback, score_beir
    from embedkit.models.loading import load_st_folder

    model = load_model(tiny_bert)
    best_dir = tmp_path / "best"
    cb = RetrievalEvalCallback(small_beir, every_n_steps=1, metric="ndcg@10", keep_best=True, best_dir=best_dir,
                               eval_at_start=True)
    trainer = _trainer(model, tmp_path / "run", _pairs(small_beir), steps=3)
    cb.attach(trainer)
    trainer.train()

    key = "eval_mp_small_ndcg@10"
    logged = [(e["step"], e[key]) for e in trainer.state.log_history if key in e]
    assert [s for s, _ in logged] == [0, 1, 2, 3]
    assert [s for s, _ in cb.history] == [0, 1, 2, 3]
    values = [v for _, v in logged]
    assert len(set(values)) > 1  # training moved the metric
    best_step, best_value = max(logged, key=lambda sv: (sv[1], -sv[0]))
    assert cb.best_metric == pytest.approx(best_value) and cb.best_step == best_step
    last = [e for e in trainer.state.log_history if key in e][-1]
    assert last["eval_mp_small_best_ndcg@10"] == pytest.approx(best_value)
    # the saved best model really is the one that scored best
    record = json.loads((best_dir / "best.json").read_text())
    assert record["step"] == best_step and record["value"] == pytest.approx(best_value)
    reloaded = load_st_folder(best_dir)
    assert score_beir(reloaded, small_beir)["ndcg@10"] == pytest.approx(best_value, abs=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".best")]


def test_callback_without_attach_writes_log_history_and_respects_interval(tmp_path, tiny_bert, small_beir):
    from embedkit import load_model
    from embedkit.evaluation import RetrievalEvalCallback

    model = load_model(tiny_bert)
    cb = RetrievalEvalCallback(small_beir, every_n_steps=2, keep_best=False, max_queries=10, max_corpus=30,
                               metric="mrr@5", prefix="heldout/")
    assert len(cb.data.queries) == 10 and len(cb.data.corpus) == 30
    trainer = _trainer(model, tmp_path / "run", _pairs(small_beir), steps=3)
    trainer.add_callback(cb)  # not attached: entries go straight into state.log_history
    trainer.train()
    steps = [e["step"] for e in trainer.state.log_history if "heldout/mrr@5" in e]
    assert steps == [2, 3]  # every 2 steps, plus the final step
    last = [e for e in trainer.state.log_history if "heldout/mrr@5" in e][-1]
    assert {"heldout/ndcg@5", "heldout/recall@10", "heldout/best_mrr@5"} <= set(last)
    assert not (tmp_path / "run" / "best-retrieval").exists()


def test_best_is_kept_when_the_metric_drops(tmp_path, tiny_bert, tiny_bert_b, small_beir):
    """Feed the callback a better model at step 1 and a worse one at step 2: best stays at step 1."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from embedkit import load_model
    from embedkit.evaluation import RetrievalEvalCallback, score_beir

    models = [load_model(tiny_bert), load_model(tiny_bert_b)]
    scores = [score_beir(m, small_beir)["ndcg@10"] for m in models]
    assert scores[0] != scores[1]
    good, bad = (models if scores[0] > scores[1] else models[::-1])
    cb = RetrievalEvalCallback(small_beir, every_n_steps=1)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[])
    state, control = TrainerState(), TrainerControl()
    for step, model in ((1, good), (2, bad)):
        state.global_step = step
        cb.on_step_end(args, state, control, model=model)
    assert cb.best_step == 1 and cb.best_metric == pytest.approx(max(scores))
    logged = [e["eval_mp_small_ndcg@10"] for e in state.log_history]
    assert logged == pytest.approx([max(scores), min(scores)])
    best = tmp_path / "run" / "best-retrieval"  # default location: under output_dir
    assert json.loads((best / "best.json").read_text())["step"] == 1
    with pytest.raises(ConfigError, match="needs a SentenceTransformer"):
        cb.on_step_end(args, state, control, model=object())


def test_callback_config_errors(small_beir):
    from embedkit.evaluation import RetrievalEvalCallback

    with pytest.raises(ConfigError, match="unknown metric 'map@10'"):
        RetrievalEvalCallback(small_beir, metric="map@10")
    with pytest.raises(ConfigError, match="every_n_steps"):
        RetrievalEvalCallback(small_beir, every_n_steps=0)
