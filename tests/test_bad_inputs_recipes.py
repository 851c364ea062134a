"""Bad-input catalogue, recipes: bad recipe values and training data a recipe points at.

Every case must exit 2 with one actionable line that names the recipe key (and the recipe file's line, or the
``--set`` option, where the value came from) and leave no output behind (:func:`bad_input_harness.check_case`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_harness import GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, Case, _beir, _good_pairs, _recipe, _w, check_case


def _train(t: Path, recipe: str, *sets: str) -> list[str]:
    argv = ["train", recipe, "-o", str(t / "out")]
    for s in sets:
        argv += ["--set", s]
    return argv


def _test_only_beir(t: Path) -> str:
    """A valid BEIR folder whose only qrels split is ``test``."""
    return _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS)


def _recipe_on_beir(t: Path, m: str, beir: str, dataset_extra: str = "", extra: str = "") -> str:
    """The harness recipe, with its one data set replaced by ``beir`` (plus keys for that data set)."""
    text = (f"model:\n  name: {m}\n  max_seq_length: 32\ndata:\n  datasets:\n    - path: {beir}\n"
            f"      max_negatives: 0\n{dataset_extra}training:\n  batch_size: 2\n  max_steps: 1\n{extra}")
    return str(_w(t / "recipe.yaml", text))


CASES: list[Case] = [
    # the data file the recipe names: the error says which recipe key and which line of the recipe
    Case("train: recipe data file missing names key and line", lambda t, m, b: _train(
        t, _recipe(t, b, str(t / "missing.jsonl"))),
         ("recipe.yaml:6", "data.datasets.0.path", "missing.jsonl"), category="recipes"),
    Case("train: recipe names an unknown packaged sample", lambda t, m, b: _train(
        t, _recipe(t, b, "sample:debain-train")),
         ("recipe.yaml:6", "data.datasets.0.path", "debain-train", "debian-train"), category="recipes"),
    # non-finite numbers are refused for every numeric key, from --set or from the file
    Case("train: --set learning rate to infinity", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "training.lr=.inf"),
         ("--set training.lr", "finite", "inf"), category="recipes"),
    Case("train: --set learning rate to NaN", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "training.lr=.nan"),
         ("--set training.lr", "finite", "nan"), category="recipes"),
    Case("train: recipe number overflows to infinity", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t), "losses:\n  infonce:\n    temperature: 1e999\n")),
         ("recipe.yaml:13", "losses.infonce.temperature", "finite"), category="recipes"),
    Case("train: --set data set weight to infinity", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "data.datasets.0.weight=.inf"),
         ("data.datasets.0.weight", "finite"), category="recipes"),
    # values out of range
    Case("train: --set negative seed", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "training.seed=-1"),
         ("--set training.seed", ">= 0"), category="recipes"),
    Case("train: --set negative batch size", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "training.batch_size=-2"),
         ("--set training.batch_size", ">= 1"), category="recipes"),
    Case("train: unknown loss name", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t), "losses:\n  triplet:\n    margin: 0.1\n")),
         ("recipe.yaml:12", "losses.triplet", "infonce, listwise"), category="recipes"),
    # --set into lists: say how many items there are
    Case("train: --set data set index out of range", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "data.datasets.5.path=x"),
         ("data.datasets.5", "1 data set", "0..0"), category="recipes"),
    Case("train: --set list item by name instead of index", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "data.datasets.first.path=x"),
         ("data.datasets.first", "index", "0..0"), category="recipes"),
    # the training data must not be the evaluation data
    Case("train: recipe trains on its eval set", lambda t, m, b: _train(
        t, _recipe_on_beir(t, b, "sample:debian-beir", "      split: test\n", "eval:\n  beir: sample:debian-beir\n")),
         ("data.datasets.0.path", "eval.beir", "debian-beir"), category="recipes"),
    Case("train: recipe trains on its eval folder under another spelling", lambda t, m, b: _train(
        t, _recipe_on_beir(t, b, _test_only_beir(t), "      split: test\n",
                           f"eval:\n  beir: {t / 'x' / '..' / 'beir'}\n")),
         ("data.datasets.0.path", "eval.beir", "split 'test'"), category="recipes"),
    # a BEIR training folder without the train split is an error, not a silent fall-back to the test split
    Case("train: BEIR training folder without a train split", lambda t, m, b: _train(
        t, _recipe_on_beir(t, b, _test_only_beir(t))),
         ("recipe.yaml:6", "data.datasets.0", "qrels/train.tsv", "test"), category="inputs"),
    # a Matryoshka dim the model cannot give: refused once the model is loaded, before any mining or training
    Case("train: matryoshka dim above the model's dimension", lambda t, m, b: _train(
        t, _recipe(t, b, _good_pairs(t)), "losses.matryoshka.dims=[4096, 8]"),
         ("--set losses.matryoshka.dims", "4096 is larger than the model's embedding dimension"),
         category="recipes"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    check_case(case, tmp_path, minilm_path, tiny_bert, capsys)
