"""LoRA members: merged into the base one at a time, then averaged (never A and B averaged separately)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from soup_helpers import all_weights, make_adapter, perturbed_copy

from embedkit.cli import main
from embedkit.soup import soup


def _adapter_deltas(adapter: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``base weight name -> (A, B, scaling)`` read straight from an adapter folder."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scaling = cfg["lora_alpha"] / cfg["r"]
    state = load_file(adapter / "adapter_model.safetensors")
    out = {}
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        b = state[key.replace(".lora_A.", ".lora_B.")]
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        out[name] = (a.double(), b.double(), scaling)
    return out


def test_lora_merge_then_average_equals_hand_computation(st_tiny: str, tmp_path: Path) -> None:
    adapters = [make_adapter(st_tiny, tmp_path / f"ad{s}", seed=s) for s in (1, 2)]
    res = soup([str(a) for a in adapters], method="weighted", weights=[1, 3], output=tmp_path / "out")
    assert [m.kind for m in res.members] == ["lora", "lora"]
    base = load_file(Path(st_tiny) / "model.safetensors")
    got = load_file(tmp_path / "out" / "model.safetensors")
    deltas = [_adapter_deltas(a) for a in adapters]
    assert set(deltas[0]) and set(deltas[0]) == set(deltas[1])
    assert got.keys() == base.keys()
    w = [0.25, 0.75]
    worst_merge, worst_naive = 0.0, 0.0
    for name, tensor in base.items():
        if name in deltas[0]:
            want = tensor.double() + sum(wi * s * (b @ a) for wi, (a, b, s) in zip(w, (d[name] for d in deltas)))
            # the wrong recipe: average A and B, then multiply
            a_avg = sum(wi * d[name][0] for wi, d in zip(w, deltas))
            b_avg = sum(wi * d[name][1] for wi, d in zip(w, deltas))
            naive = tensor.double() + deltas[0][name][2] * (b_avg @ a_avg)
            worst_naive = max(worst_naive, (got[name].double() - naive).abs().max().item())
        else:
            want = tensor.double() if tensor.is_floating_point() else tensor
        worst_merge = max(worst_merge, (got[name].double() - want.double()).abs().max().item())
    assert worst_merge <= 1e-5
    assert worst_naive > 1e-2  # the soup is NOT the product of averaged factors


def test_lora_soup_keeps_base_pipeline_and_interpolates(st_tiny: str, tmp_path: Path) -> None:
    import embedkit

    adapters = [make_adapter(st_tiny, tmp_path / f"ad{s}", seed=s) for s in (1, 2)]
    soup([str(a) for a in adapters], output=tmp_path / "plain")
    soup([str(a) for a in adapters], base=st_tiny, base_weight=0.4, output=tmp_path / "interp")
    plain = all_weights(tmp_path / "plain")["model.safetensors"]
    interp = all_weights(tmp_path / "interp")["model.safetensors"]
    base = all_weights(st_tiny)["model.safetensors"]
    for k, v in base.items():
        if v.is_floating_point():
            want = 0.6 * plain[k].double() + 0.4 * v.double()
            assert (interp[k].double() - want).abs().max().item() <= 1e-6, k
    for rel in ("modules.json", "1_Pooling/config.json", "2_Normalize/config.json", "tokenizer.json"):
        assert (tmp_path / "plain" / rel).is_file(), rel
    emb = embedkit.encode(embedkit.load_model(str(tmp_path / "plain")), ["a b c"])
    assert emb.shape == (1, 32) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-5)
    assert "merged into its base before averaging" in (tmp_path / "plain" / "README.md").read_text()


def test_single_lora_member_equals_peft_merge(st_tiny: str, tmp_path: Path) -> None:
    """A one-adapter soup is exactly peft's merged model (the soup adds no error of its own)."""
    import embedkit
    from embedkit.models.lora import load_adapter, merge_lora

    ad = make_adapter(st_tiny, tmp_path / "ad", seed=3)
    soup([str(ad)], output=tmp_path / "out")
    ref = merge_lora(load_adapter(embedkit.load_model(st_tiny), ad))
    texts = ["one", "two words here"]
    a = embedkit.encode(ref, texts)
    b = embedkit.encode(embedkit.load_model(str(tmp_path / "out")), texts)
    assert np.abs(a - b).max() <= 1e-6


def test_lora_members_with_different_bases_are_refused(st_tiny: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    other_base = perturbed_copy(st_tiny, tmp_path / "other_base", seed=9)
    a = make_adapter(st_tiny, tmp_path / "a", seed=1)
    b = make_adapter(str(other_base), tmp_path / "b", seed=2)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["soup", str(a), str(b), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "LoRA members have different bases" in err and str(b) in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_lora_and_full_members_cannot_be_mixed(st_tiny: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    a = make_adapter(st_tiny, tmp_path / "a", seed=1)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["soup", st_tiny, str(a), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot mix LoRA adapters and full checkpoints" in err
    assert not out.exists()


def test_lora_copies_of_the_same_base_are_accepted(st_tiny: str, tmp_path: Path) -> None:
    """Two base folders with identical weights (fingerprint) count as the same base."""
    import shutil

    copy = Path(shutil.copytree(st_tiny, tmp_path / "base_copy"))
    a = make_adapter(st_tiny, tmp_path / "a", seed=1)
    b = make_adapter(str(copy), tmp_path / "b", seed=2)
    res = soup([str(a), str(b)], output=tmp_path / "out")
    assert len(res.members) == 2 and (tmp_path / "out" / "model.safetensors").is_file()


def _adapter_run(base: str, out: Path, seed: int) -> Path:
    """A run saved like ``model.lora.merge_on_save: false``: the base pipeline (latent-attention pooling, trained
    too) plus ``adapter/``; seeded random LoRA factors and pooling weights."""
    import embedkit
    from embedkit.models import LoraConfig
    from embedkit.training.trainer import save_pipeline

    model = embedkit.load_model(base, pooling="latent_attention", latent_attention={"num_latents": 4, "num_heads": 4},
                                lora=LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["query", "value"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
        for p in model[1].parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    save_pipeline(model, out, merge_lora=False)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    return out


def test_runs_saved_with_their_adapter_are_merged_then_averaged(tiny_bert: str, tmp_path: Path) -> None:
    """merge_on_save: false runs are LoRA members: each adapter is merged into its run's base, the merged weights
    and the runs' own pooling weights are averaged; nothing of adapter/ reaches the soup."""
    import embedkit

    runs = [_adapter_run(tiny_bert, tmp_path / f"run{s}", seed=s) for s in (1, 2)]
    res = soup([str(r) for r in runs], method="weighted", weights=[1, 3], output=tmp_path / "out")
    assert [m.kind for m in res.members] == ["lora", "lora"]
    out = tmp_path / "out"
    assert not (out / "adapter").exists()
    w = [0.25, 0.75]
    # the reference: each run loaded (adapter merged by load_model), weights averaged by hand
    merged = [embedkit.load_model(str(r)) for r in runs]
    states = [m.state_dict() for m in merged]
    got = embedkit.load_model(str(out)).state_dict()
    worst = max((got[k].double() - sum(wi * st[k].double() for wi, st in zip(w, states))).abs().max().item()
                for k in got if got[k].is_floating_point())
    assert worst <= 1e-5
    # the pooling module trained in each run: it is averaged too, not copied from the first run
    pool = load_file(out / "1_LatentAttentionPooling" / "model.safetensors")
    pools = [load_file(r / "1_LatentAttentionPooling" / "model.safetensors") for r in runs]
    for k, v in pool.items():
        assert (v.double() - (0.25 * pools[0][k].double() + 0.75 * pools[1][k].double())).abs().max() <= 1e-6, k
    # and it really is the merged model, not the base: the base pipeline's own backbone differs
    base_backbone = load_file(runs[0] / "model.safetensors")
    soup_backbone = load_file(out / "model.safetensors")
    assert max((soup_backbone[k] - base_backbone[k]).abs().max().item() for k in base_backbone
               if "query.weight" in k) > 1e-3
