"""Model loading errors are one clear line."""

from __future__ import annotations

import json

import pytest

from embedkit.cli import main
from embedkit.errors import ModelError
from embedkit.models import load_model


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path / "nope"))
    msg = str(err.value)
    assert "not found" in msg and "minilm" in msg and "\n" not in msg


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(str(tmp_path))


def test_corrupt_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(str(tmp_path))


def test_pickle_only_weights_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match="safetensors only"):
        load_model(str(tmp_path))


def test_cli_missing_model_exit_2(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("hello\n")
    code = main(["encode", "--model", str(tmp_path / "missing"), "-i", str(src), "-o", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]
    assert not (tmp_path / "o.npy").exists()


# ---- weights that do not match config.json (issue 27, item 6)


def _config_edited(tmp_path, tiny_bert, **changes):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_weights_not_matching_config_is_one_line(tmp_path, tiny_bert):
    folder = _config_edited(tmp_path, tiny_bert, hidden_size=16, num_attention_heads=2)
    with pytest.raises(ModelError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert "\n" not in msg and "do not match config.json" in msg and "ignore_mismatched_sizes" not in msg
    assert "has shape [32" in msg and "needs [16" in msg and "hidden_size 16" in msg
    assert "model.safetensors" in msg


def test_weights_not_matching_config_in_a_sentence_transformers_folder(tmp_path, tiny_bert):
    model = load_model(tiny_bert)
    folder = tmp_path / "st"
    model.save(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (folder / "config.json").write_text(json.dumps(cfg))
    pattern = r"intermediate\.dense\.\w+' of model.safetensors has shape \[64.*intermediate_size 48"
    with pytest.raises(ModelError, match=pattern):
        load_model(str(folder))


@pytest.mark.parametrize("command", ["encode", "eval"])
def test_cli_weights_not_matching_config_exit_2(tmp_path, tiny_bert, capsys, command):
    folder = _config_edited(tmp_path, tiny_bert, hidden_size=16, num_attention_heads=2)
    if command == "encode":
        src = tmp_path / "t.jsonl"
        src.write_text('{"text": "hello"}\n')
        argv = ["encode", "--model", str(folder), "-i", str(src), "-o", str(tmp_path / "o.npy")]
    else:
        beir = tmp_path / "beir"
        (beir / "qrels").mkdir(parents=True)
        (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "list files"}\n{"_id": "d2", "text": "copy"}\n')
        (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "ls"}\n')
        (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        argv = ["eval", str(folder), "--beir", str(beir), "-o", str(tmp_path / "o")]
    capsys.readouterr()
    code = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("embedkit: error:") and "do not match config.json" in err[0]
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o").exists()


def test_embedding_dimension_is_read_from_the_configs_without_loading(tmp_path, tiny_bert, minilm_path):
    """The size ``load_model`` gives, from configs alone: a Dense head's out_features, else the hidden size."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    from embedkit.models.loading import embedding_dimension

    assert embedding_dimension(minilm_path) == load_model(minilm_path).get_embedding_dimension() == 384
    assert embedding_dimension(tiny_bert) == load_model(tiny_bert).get_embedding_dimension() == 32
    body = Transformer(tiny_bert)
    st = SentenceTransformer(modules=[body, Pooling(32), Dense(32, 12)])
    st.save(str(tmp_path / "dense"))
    assert embedding_dimension(str(tmp_path / "dense")) == load_model(str(tmp_path / "dense")).get_embedding_dimension() == 12
