"""Consolidated saving under FSDP2: a real 2-process ``torchrun`` (gloo, CPU) run of ``tests/distributed/fsdp_save.py``.

The model is sharded with ``fully_shard`` (every parameter a ``DTensor`` shard). ``EmbeddingTrainer._save`` (what
``Trainer.save_model`` calls) and ``save_pipeline(state_dict=...)`` must write the *full* weights: the folder loads
with ``SentenceTransformer(path)`` and ``embedkit.load_model`` and encodes exactly like the trained, sharded model
in memory. Resuming from that folder (weights re-sharded, SGD without state) continues to the same model as an
uninterrupted run. Saving a sharded model without the consolidated weights is refused. ``ScoringCallback`` scores on
every rank of a sharded model (its forward is a collective; rank 0 alone used to score and hung), rank 0 logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchrun_helpers import copy_without_dropout, encode_folder, run_worker  # noqa: E402

SCRIPT = Path(__file__).parent / "fsdp_save.py"


def _torchrun(model: str, out: Path, *extra: str) -> dict:
    return run_worker(SCRIPT, model, out, *extra)


@pytest.fixture(scope="module")
def nodrop(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return copy_without_dropout(tiny_bert, tmp_path_factory.mktemp("fsdp_nodrop"))


def _encode(folder: Path, texts: list[str], *, plain: bool) -> torch.Tensor:
    return encode_folder(folder, texts, plain=plain)


@pytest.mark.slow
def test_fsdp2_saves_consolidated_weights_and_resumes(nodrop: str, tmp_path: Path) -> None:
    from embedkit.models import load_model

    texts = ["copy a file", "list running processes", "compress a folder into an archive"]
    full = _torchrun(nodrop, tmp_path / "full", "--steps", "4", "--save-at", "2")
    assert full["param_types"] == ["DTensor"]  # really sharded
    trained = torch.tensor(full["embeddings"])
    start = load_model(nodrop).eval().encode(texts, convert_to_tensor=True).cpu()
    assert (trained - start).abs().max() > 1e-3, "training did not move the model"
    for folder in ("final", "trainer_save"):
        for plain in (True, False):
            got = _encode(tmp_path / "full" / folder, texts, plain=plain)
            assert torch.allclose(got, trained, atol=1e-5), (folder, plain, (got - trained).abs().max())
    # periodic scoring: every rank ran the scorer (the forward is a collective), rank 0 alone logged it
    assert full["ranks_scored"] == [1, 1] and len(full["scored"]) == 1 and full["scored"][0][0] == 4
    # a sharded model saved without the gathered weights is refused, not written as one rank's shards
    assert full["refused"].startswith("OutputError") and "sharded" in full["refused"]
    assert not (tmp_path / "full" / "refused" / "model.safetensors").exists()

    # resume: the folder saved after step 2, reloaded and sharded again, 2 more steps == 4 steps in one go
    resumed = _torchrun(str(tmp_path / "full" / "mid"), tmp_path / "b", "--steps", "2", "--first-step", "2")
    assert resumed["losses"] == pytest.approx(full["losses"][2:], abs=1e-5)
    assert torch.allclose(torch.tensor(resumed["embeddings"]), trained, atol=1e-5)
