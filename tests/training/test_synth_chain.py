"""The one-command corpus-only chain (``synth:`` section, ``recipes/minilm-synth.yaml``): queries are generated
for the corpus into ``OUT/synth/pairs.jsonl``, which becomes one more data set for mining and training; a resumed
run regenerates nothing, and a bad corpus or section fails before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import embedkit
import embedkit.synth.pipeline
from embedkit.data.readers import load_pairs
from embedkit.errors import ConfigError, InputError
from embedkit.training.config import load_recipe, parse_recipe
from embedkit.training.runner import run_recipe
from test_training_resume import StopAt

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = Path(embedkit.__file__).parent / "recipes" / "minilm-synth.yaml"


def _corpus(tmp_path: Path, n: int = 16) -> Path:
    """``n`` real man-page descriptions (the packaged corpus) as a JSONL corpus."""
    from embedkit.data.samples import sample_path

    lines = (sample_path("manpages") / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _recipe(tmp_path: Path, minilm_path: str, **synth: Any) -> Path:
    """The shipped synth recipe, scaled down: crop queries (no LLM) for 16 documents, the real MiniLM, 3 steps."""
    recipe = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    recipe["model"] = {"name": minilm_path, "max_seq_length": 48}
    recipe["synth"].update({"corpus": str(_corpus(tmp_path)), "method": "crop", "round_trip_model": None, **synth})
    recipe["miner"].update({"range_max": 8})
    recipe["training"].update({"batch_size": 4, "gradcache_chunk_size": None, "max_steps": 3, "logging_steps": 1})
    recipe.pop("eval")
    recipe["output"] = {"save_steps": 1}
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_the_shipped_synth_recipe_generates_with_an_llm_then_mines_and_trains() -> None:
    r = load_recipe(SHIPPED)
    assert r.synth is not None and r.synth.method == "llm+crop" and r.synth.model == "smollm2"
    assert r.synth.query_types == ["question", "keyword", "title", "claim"]  # the measured defaults
    assert r.synth.round_trip_model is not None and r.miner is not None and r.data.datasets == []
    assert r.eval.beir == "sample:manpages" and r.synth.corpus == "sample:manpages"


def test_chain_writes_the_pairs_trains_on_them_and_resume_regenerates_nothing(
        tmp_path: Path, minilm_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = embedkit.synth.pipeline.synthesize
    monkeypatch.setattr(embedkit.synth.pipeline, "synthesize",
                        lambda corpus, out, *a, **kw: calls.append(Path(out)) or real(corpus, out, *a, **kw))
    recipe = load_recipe(_recipe(tmp_path, minilm_path))
    out = tmp_path / "run"
    first = run_recipe(recipe, out, callbacks=[StopAt(2)])
    assert first.stages[0].global_step == 2 and calls == [out / "synth" / "pairs.jsonl"]
    pairs = list(load_pairs(out / "synth" / "pairs.jsonl"))
    assert len(pairs) >= 16 and all(p.query_type and p.doc_id for p in pairs)  # 2 crops per document, filtered
    mined = list(load_pairs(out / "mined" / "synth.jsonl"))  # the miner ran on the generated pairs
    assert [p.query for p in mined] == [p.query for p in pairs] and any(p.negatives for p in mined)
    assert [(p.query_type, p.doc_id) for p in mined] == [(p.query_type, p.doc_id) for p in pairs]  # kept by mining
    stamp = (out / "synth" / "pairs.jsonl").stat().st_mtime_ns
    done = run_recipe(recipe, out, resume=True)
    assert done.stages[0].global_step == 3 and (out / "final" / "modules.json").is_file()
    assert calls == [out / "synth" / "pairs.jsonl"]  # not generated again
    assert (out / "synth" / "pairs.jsonl").stat().st_mtime_ns == stamp
    card = json.loads((out / "final" / "embedkit_training.json").read_text())
    assert "synth" in json.dumps(card)  # the model card names the data set it trained on


def test_a_missing_corpus_fails_before_the_output_folder_exists(tmp_path: Path, minilm_path: str) -> None:
    recipe = load_recipe(_recipe(tmp_path, minilm_path), sets=[f"synth.corpus={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(InputError, match="'synth.corpus'.*does not exist") as exc:
        run_recipe(recipe, tmp_path / "run")
    assert exc.value.where == "--set synth.corpus"
    assert not (tmp_path / "run").exists()


def test_synth_contradictions_are_refused_at_validation() -> None:
    with pytest.raises(ConfigError, match="also the name of a data set"):
        parse_recipe({"synth": {"corpus": "d.jsonl", "method": "crop", "name": "mine"},
                      "data": {"datasets": [{"path": "p.jsonl", "name": "mine"}]}})
    with pytest.raises(ConfigError, match="multi-stage"):
        parse_recipe({"synth": {"corpus": "d.jsonl", "method": "crop"},
                      "stages": [{"name": "a"}, {"name": "b"}]})
    with pytest.raises(ConfigError, match="synth.corpus"):
        parse_recipe({"synth": {"method": "crop"}})
    # synth alone is training data enough; without it an empty data list still is an error
    assert parse_recipe({"synth": {"corpus": "d.jsonl", "method": "crop"}}).data.datasets == []
    with pytest.raises(ConfigError, match="no training data"):
        parse_recipe({})
