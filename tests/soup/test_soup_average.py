"""Averaging math of `embedkit soup`: identity, hand-computed averages, weights, base interpolation, pipelines."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from soup_helpers import all_weights, perturbed_copy

from embedkit.soup import soup
from embedkit.soup.merge import SafetensorsWriter, _row_blocks
from embedkit.soup.checkpoint import TensorSpec


def _members(src: str, tmp_path: Path, seeds: list[int], scale: float = 0.02) -> list[str]:
    return [str(perturbed_copy(src, tmp_path / f"m{s}", seed=s, scale=scale)) for s in seeds]


def _hand_average(folders: list[str], weights: list[float]) -> dict[str, dict[str, torch.Tensor]]:
    states = [all_weights(f) for f in folders]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for rel in states[0]:
        out[rel] = {}
        for k, v in states[0][rel].items():
            if v.is_floating_point():
                out[rel][k] = sum(w * s[rel][k].double() for s, w in zip(states, weights))
            else:
                out[rel][k] = v
    return out


def _max_diff(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for rel in a:
        assert a[rel].keys() == b[rel].keys(), rel
        for k in a[rel]:
            assert a[rel][k].shape == b[rel][k].shape, k
            worst = max(worst, (a[rel][k].double() - b[rel][k].double()).abs().max().item())
    return worst


def test_soup_of_identical_checkpoints_is_the_checkpoint(st_tiny: str, tmp_path: Path) -> None:
    member = _members(st_tiny, tmp_path, [1])[0]
    res = soup([member] * 3, output=tmp_path / "out")
    assert [m.weight for m in res.members] == pytest.approx([1 / 3] * 3)
    got, ref = all_weights(tmp_path / "out"), all_weights(member)
    assert _max_diff(got, ref) <= 1e-7
    for rel in ref:  # dtypes and the int64 position_ids buffer survive exactly
        for k in ref[rel]:
            assert got[rel][k].dtype == ref[rel][k].dtype
            if not ref[rel][k].is_floating_point():
                assert torch.equal(got[rel][k], ref[rel][k])


def test_uniform_soup_equals_hand_average(st_tiny: str, tmp_path: Path) -> None:
    members = _members(st_tiny, tmp_path, [1, 2, 3])
    soup(members, output=tmp_path / "out")
    got = all_weights(tmp_path / "out")
    assert _max_diff(got, _hand_average(members, [1 / 3] * 3)) <= 1e-6
    # and it really is an average, not the first member
    assert _max_diff(got, all_weights(members[0])) > 1e-3


def test_weights_are_normalised(st_tiny: str, tmp_path: Path) -> None:
    members = _members(st_tiny, tmp_path, [1, 2])
    soup(members, output=tmp_path / "uniform")
    soup(members, method="weighted", weights=[2, 2], output=tmp_path / "w22")
    assert _max_diff(all_weights(tmp_path / "uniform"), all_weights(tmp_path / "w22")) == 0.0
    res = soup(members, method="weighted", weights=[1, 3], output=tmp_path / "w13")
    assert [m.weight for m in res.members] == [0.25, 0.75]
    assert _max_diff(all_weights(tmp_path / "w13"), _hand_average(members, [0.25, 0.75])) <= 1e-6


def test_zero_weight_member_is_ignored(st_tiny: str, tmp_path: Path) -> None:
    members = _members(st_tiny, tmp_path, [1, 2])
    soup(members, method="weighted", weights=[0, 5], output=tmp_path / "out")
    assert _max_diff(all_weights(tmp_path / "out"), all_weights(members[1])) <= 1e-7


def test_base_interpolation_equals_hand_computation(st_tiny: str, tmp_path: Path) -> None:
    members = _members(st_tiny, tmp_path, [1, 2])
    res = soup(members, method="weighted", weights=[1, 3], base=st_tiny, base_weight=0.3, output=tmp_path / "out")
    assert res.base_weight == 0.3
    soup_part = _hand_average(members, [0.25, 0.75])
    base = all_weights(st_tiny)
    want = {rel: {k: (0.7 * v + 0.3 * base[rel][k].double()) if v.is_floating_point() else v
                  for k, v in sd.items()} for rel, sd in soup_part.items()}
    assert _max_diff(all_weights(tmp_path / "out"), want) <= 1e-6
    card = (tmp_path / "out" / "README.md").read_text()
    assert "0.700 x soup + 0.300 x base" in card


def test_output_keeps_pipeline_and_loads(st_tiny: str, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    import embedkit

    src = Path(st_tiny)
    cfg = json.loads((src / "config_sentence_transformers.json").read_text())
    members = _members(st_tiny, tmp_path, [1, 2])
    for m in members:  # prompts travel with the pipeline
        c = dict(cfg, prompts={"query": "query: ", "document": "passage: "})
        (Path(m) / "config_sentence_transformers.json").write_text(json.dumps(c))
    out = tmp_path / "out"
    soup(members, output=out)
    for rel in ("modules.json", "1_Pooling/config.json", "2_Normalize/config.json", "tokenizer.json",
                "config_sentence_transformers.json", "README.md", "embedkit_soup.json"):
        assert (out / rel).is_file(), rel
    assert json.loads((out / "modules.json").read_text()) == json.loads((src / "modules.json").read_text())
    texts = ["how to list files", "a text editor"]
    ours = embedkit.load_model(str(out))
    plain = SentenceTransformer(str(out))
    assert ours.prompts["query"] == "query: "
    a = embedkit.encode(ours, texts, role="query")
    b = plain.encode(texts, prompt_name="query")
    assert np.abs(a - b).max() < 1e-6
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)  # Normalize module kept
    record = json.loads((out / "embedkit_soup.json").read_text())
    assert [m["path"] for m in record["members"]] == members


def test_latent_attention_soup_keeps_the_module(st_latent: str, tmp_path: Path) -> None:
    import embedkit

    member = _members(st_latent, tmp_path, [4])[0]
    other = _members(st_latent, tmp_path, [5])[0]
    out_same, out_mix = tmp_path / "same", tmp_path / "mix"
    soup([member, member], output=out_same)
    soup([member, other], output=out_mix)
    rel = "1_LatentAttentionPooling/model.safetensors"
    assert (out_same / rel).is_file()
    modules = json.loads((out_same / "modules.json").read_text())
    assert modules[1]["type"] == "embedkit.models.pooling.LatentAttentionPooling"
    texts = ["install a package", "edit text files", "x"]
    e_member = embedkit.encode(embedkit.load_model(member), texts)
    e_soup = embedkit.encode(embedkit.load_model(str(out_same)), texts)
    assert np.abs(e_member - e_soup).max() <= 1e-6
    # the latent module's weights are averaged too
    want = _hand_average([member, other], [0.5, 0.5])[rel]
    got = all_weights(out_mix)[rel]
    assert max((got[k].double() - want[k]).abs().max().item() for k in want) <= 1e-6
    assert embedkit.load_model(str(out_mix)).encode(texts).shape == (3, 32)


def test_streaming_writer_matches_safetensors_reader(tmp_path: Path) -> None:
    """The hand-written safetensors file (header + row blocks) reads back exactly, for every dtype we write."""
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a.f32": torch.randn(7, 3, generator=gen),
        "b.bf16": torch.randn(5, generator=gen).to(torch.bfloat16),
        "c.f16": torch.randn(2, 2, 2, generator=gen).to(torch.float16),
        "d.i64": torch.arange(6).reshape(2, 3),
        "e.scalar": torch.tensor(3.5),
        "f.empty": torch.zeros(0, 4),
        "g.bool": torch.tensor([True, False, True]),
    }
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64",
             torch.bool: "BOOL"}
    specs = [TensorSpec(k, names[v.dtype], tuple(v.shape)) for k, v in tensors.items()]
    path = tmp_path / "x.safetensors"
    with open(path, "wb") as f:
        w = SafetensorsWriter(f, specs, {"format": "pt"})
        for k, v in tensors.items():
            if v.dim() and v.shape[0] > 1:  # write in two row blocks
                w.write(v[:1])
                w.write(v[1:])
            else:
                w.write(v)
        w.close()
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert header_len % 8 == 0
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v), k


def test_row_blocks_cover_large_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    import embedkit.soup.merge as merge

    monkeypatch.setattr(merge, "BLOCK_ELEMENTS", 10)
    blocks = list(_row_blocks((7, 3)))
    assert blocks == [(0, 3), (3, 6), (6, 7)]
    assert list(_row_blocks(())) == [None]
    assert list(_row_blocks((25,))) == [(0, 10), (10, 20), (20, 25)]


def test_blockwise_average_equals_whole_tensor_average(st_tiny: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import embedkit.soup.merge as merge

    members = _members(st_tiny, tmp_path, [1, 2])
    soup(members, output=tmp_path / "whole")
    monkeypatch.setattr(merge, "BLOCK_ELEMENTS", 3000)  # forces many row blocks for the large tensors
    soup(members, output=tmp_path / "blocks")
    assert _max_diff(all_weights(tmp_path / "whole"), all_weights(tmp_path / "blocks")) == 0.0


def test_sharded_plain_transformers_checkpoints(tiny_bert: str, tmp_path: Path) -> None:
    """Plain transformers folders with sharded weights: every shard is averaged, the index is kept, it loads."""
    from transformers import AutoModel, AutoTokenizer

    import embedkit

    sharded = tmp_path / "sharded"
    AutoModel.from_pretrained(tiny_bert).save_pretrained(sharded, max_shard_size="1MB")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(sharded)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) >= 2 and (sharded / "model.safetensors.index.json").is_file()
    members = _members(str(sharded), tmp_path, [1, 2])
    soup(members, output=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert _max_diff(all_weights(tmp_path / "out"), _hand_average(members, [0.5, 0.5])) <= 1e-6
    assert embedkit.encode(embedkit.load_model(str(tmp_path / "out")), ["a"]).shape == (1, 32)
