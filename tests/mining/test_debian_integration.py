"""Real data: mine the committed Debian sample with the real MiniLM and check what the negatives are."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from embedkit.data.readers import load_corpus_texts
from embedkit.data.samples import sample_path
from embedkit.mining import mine_hard_negatives
from embedkit.mining.filters import normalize_text


@pytest.mark.slow
def test_minilm_mines_hard_true_negatives_on_debian(debian_pairs, tmp_path: Path) -> None:
    from embedkit import load_model

    model = load_model("minilm")
    pairs = debian_pairs[:200]
    own = {p.positives[0] for p in pairs}
    rng = random.Random(0)
    extra = rng.sample([t for t in load_corpus_texts(sample_path("debian-beir")) if t not in own], 200)
    result = mine_hard_negatives(pairs, model, corpus=extra, cache_dir=tmp_path, num_negatives=5,
                                 show_progress_bar=False)
    stats = result.stats
    assert stats.corpus_size == 400 and stats.unique_queries == 200 and stats.encoded == 600
    assert stats.removed["positive"] > 150  # MiniLM finds most positives in its top 51
    got = [p for p in result.pairs if p.negatives]
    assert len(got) == 200 - stats.empty_queries and sum(len(p.negatives) < 5 for p in result.pairs) == \
        stats.short_queries
    # independent check with sentence-transformers' own encode on 15 queries
    for p in got[:15]:
        q = model.encode([p.query], normalize_embeddings=True)[0]
        d = model.encode([*p.positives, *p.negatives], normalize_embeddings=True)
        s = d @ q
        pos, neg = s[0], s[1:]
        assert (neg <= 0.95 * pos + 1e-4).all(), (p.query, pos, neg)  # TopK-PercPos threshold
        assert list(neg) == sorted(neg, reverse=True) or np.allclose(sorted(neg, reverse=True), neg, atol=1e-5)
        assert normalize_text(p.positives[0]) not in {normalize_text(n) for n in p.negatives}
    # hard: mined negatives score well above random documents of the corpus
    from embedkit.mining.miner import embed_texts

    q_emb = embed_texts(model, [p.query for p in got], role="query", cache_dir=tmp_path)
    n_emb = embed_texts(model, [p.negatives[0] for p in got], role="document", cache_dir=tmp_path)
    r_emb = embed_texts(model, [rng.choice(extra) for _ in got], role="document", cache_dir=tmp_path)
    hard = float(np.mean(np.sum(q_emb * n_emb, axis=1)))
    easy = float(np.mean(np.sum(q_emb * r_emb, axis=1)))
    assert hard > easy + 0.15, (hard, easy)
    # re-mining from the cache encodes nothing
    again = mine_hard_negatives(pairs, model, corpus=extra, cache_dir=tmp_path, num_negatives=3, range_min=1,
                                show_progress_bar=False)
    assert again.stats.encoded == 0
