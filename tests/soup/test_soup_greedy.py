"""Greedy soup (Wortsman et al. 2022): selection rule, what the scorer sees, and a real held-out run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from soup_helpers import all_weights, perturbed_copy

from embedkit.cli import main
from embedkit.soup import greedy_select, soup


def test_greedy_select_rule() -> None:
    """Best member first (ties: input order); keep a member iff the soup score does not drop."""
    scores = [0.50, 0.70, 0.60, 0.70, 0.10]
    table = {(1, 3): 0.72, (1, 3, 2): 0.72, (1, 3, 2, 0): 0.71, (1, 3, 2, 4): 0.80}
    seen: list[tuple[int, ...]] = []

    def soup_score(idx: list[int]) -> float:
        seen.append(tuple(idx))
        return table[tuple(idx)]

    kept, steps = greedy_select(scores, soup_score)
    assert seen == [(1, 3), (1, 3, 2), (1, 3, 2, 0), (1, 3, 2, 4)]
    assert kept == [1, 3, 2, 4]  # the tie (0.72 == 0.72) keeps member 2; member 0 drops the score
    assert [(s.member, s.kept) for s in steps] == [(1, True), (3, True), (2, True), (0, False), (4, True)]
    assert steps[0].soup_score == 0.70 and steps[-1].soup_score == 0.80


def test_greedy_select_single_member() -> None:
    kept, steps = greedy_select([0.3], lambda idx: pytest.fail("no soup to score"))
    assert kept == [0] and len(steps) == 1


def test_greedy_soup_scores_the_real_averages(st_tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A synthetic scorer (closeness to a target checkpoint) checks which folders greedy builds and keeps."""
    import embedkit.soup.api as api

    built: list[int] = []
    real_materialize = api._materialize
    monkeypatch.setattr(api, "_materialize", lambda m, b, out: (built.append(len(m)), real_materialize(m, b, out)))
    target = all_weights(st_tiny)["model.safetensors"]

    def closeness(folder: Path) -> float:
        state = load_file(Path(folder) / "model.safetensors")
        return -sum(((state[k] - v) ** 2).sum().item() for k, v in target.items() if v.is_floating_point())

    good = [perturbed_copy(st_tiny, tmp_path / f"good{s}", seed=s, scale=0.02) for s in (1, 2, 3)]
    bad = perturbed_copy(st_tiny, tmp_path / "bad", seed=7, scale=0.5)
    shifted = Path(shutil.copytree(st_tiny, tmp_path / "shifted"))  # a member that is close alone, but biased
    from safetensors.torch import save_file

    state = load_file(shifted / "model.safetensors")
    save_file({k: v + 0.012 if v.is_floating_point() else v for k, v in state.items()}, shifted / "model.safetensors",
              metadata={"format": "pt"})
    members = [str(p) for p in (bad, *good, shifted)]
    res = soup(members, method="greedy", score_fn=closeness, output=tmp_path / "out")
    by_path = {m.path: m for m in res.members}
    assert not by_path[str(bad)].kept and by_path[str(bad)].weight == 0.0
    assert all(by_path[str(g)].kept for g in good)
    kept = [m.path for m in res.members if m.kept]
    # the soup on disk is the uniform average of exactly the kept members
    states = [load_file(Path(p) / "model.safetensors") for p in kept]
    got = load_file(tmp_path / "out" / "model.safetensors")
    for k, v in got.items():
        if v.is_floating_point():
            want = sum(s[k].double() for s in states) / len(states)
            assert (v.double() - want).abs().max().item() <= 1e-6, k
    # recorded scores are the scorer's, and the written soup scores what greedy reported
    for m in res.members:
        assert m.score == pytest.approx(closeness(Path(m.path)))
    assert res.score == pytest.approx(closeness(tmp_path / "out"))
    assert res.score >= max(m.score for m in res.members)
    assert len(res.greedy_steps) == len(members)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Greedy selection" in card and "-> dropped" in card
    # one candidate soup per greedy step after the first; the winning candidate is moved, not averaged again
    assert len(built) == len(members) - 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real BEIR split: 30 man-page queries, their pages and 90 other pages as distractors."""
    from embedkit.data.beir import BeirData, load_beir, write_beir
    from embedkit.evaluation import manpages_path

    data = load_beir(manpages_path())
    qids = sorted(data.queries)[:30]
    relevant = {d for q in qids for d in data.qrels[q]}
    others = [d for d in sorted(data.corpus) if d not in relevant][:90]
    sub = BeirData(corpus={d: data.corpus[d] for d in sorted(relevant) + others},
                   queries={q: data.queries[q] for q in qids}, qrels={q: data.qrels[q] for q in qids}, name="mp30")
    out = tmp_path_factory.mktemp("heldout") / "manpages30"
    write_beir(sub, out)
    return out


@pytest.mark.slow
def test_greedy_soup_beats_every_member_on_real_data(minilm_path: str, heldout: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """MiniLM members with independent weight noise: greedy's soup scores >= the best member (real nDCG@10)."""
    import embedkit
    from embedkit.evaluation import score_beir

    base = Path(shutil.copytree(minilm_path, tmp_path / "base"))
    cfg = json.loads((base / "sentence_bert_config.json").read_text())
    (base / "sentence_bert_config.json").write_text(json.dumps(dict(cfg, max_seq_length=32)))  # fast scoring
    members = [str(perturbed_copy(base, tmp_path / f"m{s}", seed=s, scale=SCALE)) for s in (1, 2, 3)]
    out = tmp_path / "soup"
    capsys.readouterr()
    assert main(["soup", *members, "--method", "greedy", "--eval", str(heldout), "-o", str(out)]) == 0
    assert "held-out ndcg@10" in capsys.readouterr().err
    record = json.loads((out / "embedkit_soup.json").read_text())
    member_scores = [m["score"] for m in record["members"]]
    # the recorded score is real: re-score the written soup independently
    independent = score_beir(embedkit.load_model(str(out)), heldout)["ndcg@10"]
    assert record["score"] == pytest.approx(independent, abs=1e-6)
    assert independent >= max(member_scores)
    assert sum(m["kept"] for m in record["members"]) >= 2  # averaging independent noise helps: greedy keeps more


SCALE = 0.02


def test_uniform_soup_with_scorer_records_member_and_soup_scores(st_tiny: str, tmp_path: Path) -> None:
    """With a scorer, non-greedy soups score each member and the written model (after base interpolation)."""
    seen: list[Path] = []

    def mean_bias(folder: Path) -> float:
        seen.append(Path(folder))
        state = load_file(Path(folder) / "model.safetensors")
        return float(state["encoder.layer.0.output.dense.bias"].double().mean())

    members = [str(perturbed_copy(st_tiny, tmp_path / f"m{s}", seed=s, scale=0.1)) for s in (1, 2)]
    res = soup(members, score_fn=mean_bias, base=st_tiny, base_weight=0.5, output=tmp_path / "out")
    assert [m.score for m in res.members] == pytest.approx([mean_bias(Path(p)) for p in members])
    want = 0.5 * (res.members[0].score + res.members[1].score) / 2 + 0.5 * mean_bias(Path(st_tiny))
    assert res.score == pytest.approx(want, abs=1e-6)
    assert res.score == pytest.approx(mean_bias(tmp_path / "out"), abs=1e-9)
    assert all(m.kept for m in res.members) and res.greedy_steps == []
    assert len(seen) >= 3
