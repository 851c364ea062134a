"""Matryoshka dims (``losses.matryoshka``): the loss is the weighted sum over truncated, re-normalised embeddings,
GradCache equals uncached, too-large dims are one-line errors, the saved folder records its dims and still loads
with plain ``SentenceTransformer(path)``; the recipe snippets of docs/losses.md validate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from embedkit.errors import ConfigError
from embedkit.losses import (
    InfoNCELoss,
    ListwiseDistillationLoss,
    LossConfig,
    MatryoshkaLoss,
    build_loss,
    check_dims,
    make_batch,
    truncate,
)

from test_gradcache import TOL, dropout_model, max_diff, run_both  # noqa: F401  (fixture + GradCache harness)
from test_losses import unit  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS_MD = Path(__file__).resolve().parents[1] / "docs" / "losses.md"


def test_truncate_renormalises_and_keeps_padding_zero() -> None:
    x = torch.tensor([[[3.0, 4.0, 5.0], [0.0, 0.0, 0.0]]])
    out = truncate(x, 2)
    assert torch.allclose(out[0, 0], torch.tensor([0.6, 0.8])) and torch.equal(out[0, 1], torch.zeros(2))


def test_loss_is_the_weighted_sum_over_truncated_renormalised_batches() -> None:
    q, d = unit(4, 16, seed=1), unit(4 * 3, 16, seed=2)
    teacher = torch.randn(12, generator=torch.Generator().manual_seed(3))
    inner = build_loss({"infonce": {"temperature": 0.05}, "listwise": {"weight": 0.5}})
    dims, weights = [16, 8, 4], [1.0, 0.5, 2.0]
    loss, stats = MatryoshkaLoss(inner, dims, weights)(make_batch(q, d, 3, teacher_scores=teacher))
    expected = 0.0
    for dim, w in zip(dims, weights):
        qt, dt = F.normalize(q[:, :dim], dim=-1), F.normalize(d[:, :dim], dim=-1)
        part = InfoNCELoss(0.05)(make_batch(qt, dt, 3))[0] \
            + 0.5 * ListwiseDistillationLoss()(make_batch(qt, dt, 3, teacher_scores=teacher))[0]
        expected += w * part.item()
        assert stats[f"dim{dim}/infonce/loss"] == pytest.approx(
            InfoNCELoss(0.05)(make_batch(qt, dt, 3))[0].item(), rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)
    full = InfoNCELoss(0.05)(make_batch(q, d, 3))[1]
    assert stats["infonce/accuracy"] == full["accuracy"]  # unprefixed stats are the largest dim's
    assert build_loss({"infonce": {}, "matryoshka": {"dims": [16, 8]}}).weights == [1.0, 1.0]  # default weights


def test_dims_larger_than_the_model_are_one_line_errors() -> None:
    q, d = unit(2, 8, seed=4), unit(2, 8, seed=5)
    with pytest.raises(ConfigError) as exc:
        MatryoshkaLoss(InfoNCELoss(), [16, 4])(make_batch(q, d, 1))
    text = str(exc.value)
    assert text.startswith("losses.matryoshka.dims: 16 is larger than the model's embedding dimension 8")
    assert "\n" not in text and "(fix: use dims of at most 8" in text
    check_dims([8, 4], 8)
    check_dims([4096], None)  # unknown dimension: nothing to check yet


@pytest.mark.parametrize(("bad", "message"), [
    ({"dims": []}, "invalid value for 'losses.matryoshka.dims'"),
    ({"dims": [384, 0]}, "invalid value for 'losses.matryoshka.dims.1': must be >= 1 (got 0)"),
    ({"dims": [128, 128]}, "dims must not repeat"),
    ({"dims": [384, 128], "weights": [1.0]}, "give one weight per dim: 1 weights for 2 dims"),
    ({"dims": [384, 128], "weights": [0.0, 0.0]}, "weights must not all be 0"),
    ({"dims": [384, 128], "weights": [1.0, -1.0]}, "'losses.matryoshka.weights.1': must be >= 0.0 (got -1.0)"),
    ({"dim": [384]}, "losses.matryoshka.dim"),
])
def test_recipe_errors_are_one_line_and_match_the_class(bad: dict, message: str) -> None:
    from embedkit.training.config import parse_recipe

    with pytest.raises(ConfigError) as from_recipe:
        parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "losses": {"matryoshka": bad}})
    assert message in str(from_recipe.value) and "\n" not in str(from_recipe.value)
    if "dims" in bad:
        with pytest.raises(ConfigError) as from_class:
            MatryoshkaLoss(InfoNCELoss(), **bad)
        assert message in str(from_class.value) and "\n" not in str(from_class.value)


@pytest.mark.parametrize("spec", [
    {"infonce": {"temperature": 0.05, "symmetric": True, "focal_gamma": 1.0}, "matryoshka": {"dims": [32, 16, 8]}},
    {"infonce": {"temperature": 0.05}, "listwise": {"weight": 0.5}, "spread_out": {"weight": 0.5},
     "matryoshka": {"dims": [32, 12, 4], "weights": [1.0, 0.5, 0.25]}},
], ids=["infonce", "infonce+listwise+spread_out"])
def test_gradcache_equals_uncached_with_matryoshka(dropout_model, spec: dict) -> None:  # noqa: F811
    loss_fn = build_loss(spec)
    assert isinstance(loss_fn, MatryoshkaLoss)
    g_ref, g_gc, s_ref, s_gc = run_both(dropout_model, loss_fn)
    assert max_diff(g_ref, g_gc) <= TOL
    assert max(g.abs().max().item() for g in g_ref.values()) > 1e-3
    assert s_ref.keys() == s_gc.keys() and any(k.startswith("dim4/") or k.startswith("dim8/") for k in s_ref)


def test_saved_folder_records_its_dims_and_loads_with_plain_sentence_transformers(tiny_bert: str,
                                                                                  tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from embedkit.models import load_model
    from embedkit.training.config import parse_recipe, recipe_to_yaml
    from embedkit.training.model_card import matryoshka_dims, write_card

    recipe = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]},
                           "losses": {"infonce": {}, "matryoshka": {"dims": [32, 16, 8]}}})
    folder = tmp_path / "final"
    load_model(tiny_bert).save(str(folder))
    write_card(folder, recipe_yaml=recipe_to_yaml(recipe), data_stats=[], metrics={}, step=3, final=True)
    assert matryoshka_dims(folder) == [32, 16, 8]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Matryoshka dimensions" in card and "truncate_dim=8" in card and "--dims 32,16,8" in card
    info = json.loads((folder / "embedkit_training.json").read_text(encoding="utf-8"))
    assert info["matryoshka_dims"] == [32, 16, 8]
    model = SentenceTransformer(str(folder), truncate_dim=8)
    assert model.encode(["list files"]).shape == (1, 8)
    assert SentenceTransformer(str(folder)).encode(["list files"]).shape == (1, 32)
    # a recipe without Matryoshka records none
    plain = tmp_path / "plain"
    plain.mkdir()
    write_card(plain, recipe_yaml=recipe_to_yaml(parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}})),
               data_stats=[], metrics={}, step=1)
    assert matryoshka_dims(plain) is None and "Matryoshka" not in (plain / "README.md").read_text(encoding="utf-8")


def _yaml_snippets(section: str) -> list[str]:
    text = DOCS_MD.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", body, flags=re.S)


@pytest.mark.parametrize(("section", "key"), [("Matryoshka dims", "matryoshka"),
                                              ("Spread-out regulariser", "spread_out"),
                                              ("Hardness weighting", "infonce.hardness")])
def test_docs_recipe_snippets_validate(section: str, key: str) -> None:
    import yaml

    from embedkit.training.config import parse_recipe

    snippets = _yaml_snippets(section)
    assert snippets, f"docs/losses.md has no yaml snippet under '## {section}'"
    for snippet in snippets:
        data = yaml.safe_load(snippet)
        recipe = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, **data})
        value = recipe.losses
        for part in key.split("."):
            value = getattr(value, part)
        assert value is not None
        build_loss(recipe.losses)
    assert LossConfig.model_validate(data["losses"]) == recipe.losses


def test_train_end_to_end_with_matryoshka_spread_out_and_hardness(tiny_bert: str, tmp_path: Path, capsys) -> None:
    """The real trainer (GradCache on) with the three loss-side keys; the final folder records its dims."""
    import yaml
    from sentence_transformers import SentenceTransformer

    from embedkit.cli import main
    from embedkit.training.model_card import matryoshka_dims

    pairs = tmp_path / "pairs.jsonl"
    topics = ["copy", "move", "list", "delete", "compress", "find", "print", "sort", "mount", "kill", "ping", "grep"]
    pairs.write_text("".join(json.dumps({"query": f"how to {t} things", "positive": f"{t} does the {t} job",
                                         "negatives": [f"{o} is about {o}" for o in topics if o != t][:2]}) + "\n"
                             for t in topics), encoding="utf-8")
    recipe = {
        "model": {"name": tiny_bert, "max_seq_length": 32},
        "data": {"datasets": [{"path": str(pairs), "name": "toy"}]},
        "training": {"batch_size": 6, "max_steps": 2, "lr": 1.0e-3, "logging_steps": 1, "seed": 7,
                     "gradcache_chunk_size": 4},
        "losses": {"infonce": {"temperature": 0.05, "hardness": {"mode": "all_negatives", "strength": 5.0}},
                   "spread_out": {"weight": 0.5}, "matryoshka": {"dims": [32, 16, 8]}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "run"
    code = main(["train", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    final = out / "final"
    assert matryoshka_dims(final) == [32, 16, 8]
    assert "## Matryoshka dimensions" in (final / "README.md").read_text(encoding="utf-8")
    assert SentenceTransformer(str(final), truncate_dim=16).encode(["ls"]).shape == (1, 16)
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    rows = [row for row in log["history"] if "dim8_infonce_loss" in row]  # every dim's loss is logged
    assert rows and all(row["dim8_spread_out_loss"] > 0 and "dim16_infonce_loss" in row for row in rows)
