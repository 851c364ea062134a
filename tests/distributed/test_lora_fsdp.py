"""LoRA + FSDP2: a real 2-process ``torchrun`` (gloo, CPU) run of ``tests/distributed/lora_fsdp.py``, issue #32.

The sentence-transformers "'weight' must be 2-D" class of bug: a LoRA model sharded with FSDP holds flat or
partial ``DTensor`` shards, and merging the adapter (``merge_and_unload``) or saving it works on those shards. Here a
tiny BERT with a peft adapter is sharded with ``fully_shard``, trained two steps and saved merged through
``EmbeddingTrainer._save`` and ``save_pipeline(state_dict=full_state_dict(model))``, and unmerged (base +
``adapter/``). Every folder must reload with ``embedkit.load_model`` (merged ones also with ``SentenceTransformer``)
to the embeddings of the in-memory sharded model, and the sharded model must still work after saving.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchrun_helpers import copy_without_dropout, encode_folder, run_worker  # noqa: E402

SCRIPT = Path(__file__).parent / "lora_fsdp.py"
TEXTS = ["copy a file", "list running processes", "compress a folder into an archive"]


@pytest.fixture(scope="module")
def nodrop(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return copy_without_dropout(tiny_bert, tmp_path_factory.mktemp("lora_fsdp_nodrop"))


def _encode(folder: Path, *, plain: bool) -> torch.Tensor:
    return encode_folder(folder, TEXTS, plain=plain)


@pytest.mark.slow
def test_lora_fsdp2_saves_merged_weights_equal_to_the_sharded_model(nodrop: str, tmp_path: Path) -> None:
    from embedkit.models import load_model

    res = run_worker(SCRIPT, nodrop, tmp_path, timeout=180, tail=4000)
    assert res["param_types"] == ["DTensor"]  # really sharded
    assert res["trainable"] and all("lora_" in n for n in res["trainable"])  # only the adapter trains
    trained = torch.tensor(res["embeddings"])
    assert torch.allclose(torch.tensor(res["embeddings_after_save"]), trained, atol=1e-6)
    base = load_model(nodrop).eval().encode(TEXTS, convert_to_tensor=True).cpu()
    assert (trained - base).abs().max() > 1e-3, "training did not move the adapter"
    for folder in ("final", "trainer_save"):
        assert not (tmp_path / folder / "adapter").exists()  # merged: a plain model
        for plain in (True, False):
            got = _encode(tmp_path / folder, plain=plain)
            assert torch.allclose(got, trained, atol=1e-5), (folder, plain, (got - trained).abs().max())
    assert (tmp_path / "unmerged" / "adapter" / "adapter_model.safetensors").exists()
    got = _encode(tmp_path / "unmerged", plain=False)  # load_model applies adapter/
    assert torch.allclose(got, trained, atol=1e-5), (got - trained).abs().max()
