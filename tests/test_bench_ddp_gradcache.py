"""``eval/bench_ddp_gradcache.py`` (2-process DDP: sentence-transformers' CachedMNRL vs embedkit's GradCache) and
the docs' claims it backs.

The smoke test runs the real benchmark with ``--quick`` on a tiny BERT (three short ``torchrun`` launches); the doc
tests keep the stale claims out: sentence-transformers 6.2 already replays its cached losses inside ``no_sync``
(``sentence_transformers/base/losses/gradcache.py``, ``_ddp_replay_context``), and a recipe's loss section is
``losses:``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "eval" / "bench_ddp_gradcache.py"
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "BENCHMARKS.md"] + sorted((ROOT / "eval" / "results").glob("*/README.md"))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ddp_gradcache", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_st_folder(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT as a sentence-transformers folder (mean pooling + Normalize), so both arms load one pipeline."""
    from embedkit.models import load_model

    out = tmp_path_factory.mktemp("tiny_st")
    load_model(tiny_bert).save(str(out))
    return str(out)


@pytest.mark.slow
def test_quick_run_measures_both_arms(tiny_st_folder: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "res" / "ddp.json"
    _bench().main(["--quick", "--model", tiny_st_folder, "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["settings"]["chunks_per_step"] == 8 and res["settings"]["world_size"] == 2
    for name in ("st", "embedkit"):
        arm = res["arms"][name]
        calls = arm["allreduce_calls_all_steps_and_ranks"]
        assert len(calls) == 2 * res["settings"]["timed_steps"]  # every timed step on both ranks
        # both sync once per step (8 chunk backwards, one round of the model's buckets)
        assert arm["plain_backward_calls"] >= 1
        assert all(c == arm["plain_backward_calls"] for c in calls), (name, calls)
        assert arm["sync_rounds_per_step"] == 1
        assert arm["allreduce_mib_per_step"] == pytest.approx(arm["plain_backward_mib"])
        assert len(arm["step_seconds_all"]) == res["settings"]["timed_steps"] and arm["step_seconds_median"] > 0
        assert all(p >= a > 0 for p, a in zip(arm["peak_rss_mib_per_rank"], arm["rss_after_load_mib_per_rank"]))
    g = res["gradient_check"]
    assert g["params_only_in_one"] == [] and g["params_compared"] > 10
    assert g["max_abs_grad"] > 1e-3 and g["max_abs_diff"] <= 1e-5
    assert res["embedkit_over_st"]["allreduce_calls_per_step"] == 1.0
    assert "| gradient all-reduce calls per step |" in res["markdown"]
    assert res["markdown"] in capsys.readouterr().out
    assert not list(out.parent.glob("*.partial"))


def test_model_must_be_a_sentence_transformers_folder(tiny_bert: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse error, before any torchrun starts
        _bench().main(["--quick", "--model", tiny_bert, "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    assert not (tmp_path / "x.json").exists()


STALE_ST_CLAIMS = [
    r"never uses\s+`?no_sync",
    r"all-reduces once per\s+mini-batch",
    r"without it\s+--\s+the behaviour of sentence-transformers",
    r"what CachedMNRL does",
]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_do_not_claim_cached_mnrl_skips_no_sync(doc: Path) -> None:
    # sentence-transformers 6.2.0 wraps every replay but the last in no_sync (base/losses/gradcache.py,
    # _ddp_replay_context); tests/test_distributed.py and eval/bench_ddp_gradcache.py measure it
    text = re.sub(r"\s+", " ", doc.read_text(encoding="utf-8"))
    for pattern in STALE_ST_CLAIMS:
        assert not re.search(pattern, text), f"{doc.name}: stale claim matching {pattern!r}"


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```ya?ml\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_recipe_snippets_use_the_recipe_keys(doc: Path) -> None:
    from embedkit.training.config import Recipe

    fields = set(Recipe.model_fields)
    text = doc.read_text(encoding="utf-8")
    for block in _yaml_blocks(text):
        data = yaml.safe_load(block)
        if not isinstance(data, dict) or not (set(data) & (fields | {"loss"})):
            continue  # not a recipe fragment
        assert set(data) <= fields, f"{doc.name}: recipe snippet with unknown top-level keys {set(data) - fields}"
        if "losses" in data:  # the loss section validates as one
            from embedkit.losses.config import LossConfig

            LossConfig.model_validate(data["losses"])
    # prose and code that name the section
    assert "`loss:`" not in text and 'cfg["loss"]' not in text, f"{doc.name}: names a 'loss:' recipe section"
