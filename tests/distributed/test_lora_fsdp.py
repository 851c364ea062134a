"""LoRA + FSDP2: a real 2-process ``torchrun`` (gloo, CPU) run of ``tests/distributed/lora_fsdp.py``, issue #32.

The sentence-transformers "'weight' must be 2-D" class of bug: a LoRA model sharded with FSDP holds flat or
partial ``DTensor`` shards, and merging the adapter (``merge_and_unload``) or saving it works on those shards. Here a
tiny BERT with a peft adapter is sharded with ``fully_shard``, trained two steps and saved merged through
``EmbeddingTrainer._save`` and ``save_pipeline(state_dict=full_state_dict(model))``, and unmerged (base +
``adapter/``). Every folder must reload with ``embedkit.load_model`` (merged ones also with ``SentenceTransformer``)
to the embeddings of the in-memory sharded model, and the sharded model must still work after saving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "lora_fsdp.py"
TEXTS = ["copy a file", "list running processes", "compress a folder into an archive"]


@pytest.fixture(scope="module")
def nodrop(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("lora_fsdp_nodrop")
    shutil.copytree(tiny_bert, out, dirs_exist_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(cfg))
    return str(out)


def _encode(folder: Path, *, plain: bool) -> torch.Tensor:
    if plain:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu")
    else:
        from embedkit.models import load_model

        model = load_model(str(folder))
    model.eval()
    return model.encode(TEXTS, convert_to_tensor=True, batch_size=8).cpu()


@pytest.mark.slow
def test_lora_fsdp2_saves_merged_weights_equal_to_the_sharded_model(nodrop: str, tmp_path: Path) -> None:
    from embedkit.models import load_model

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "--model", nodrop, "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "result.json").read_text())
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
