"""Offline hard-negative mining: embedding cache, FAISS indexes, positive-aware filters, teacher scores.

Names are imported on first use: ``from embedkit.mining.config import MiningConfig`` (what ``embedkit mine --help``
and recipes need) loads only pydantic, while the miner brings in torch, FAISS and sentence-transformers.

Example:
    >>> from embedkit.mining import MiningConfig, mine_hard_negatives
    >>> result = mine_hard_negatives("pairs.jsonl", "minilm", num_negatives=7, cache_dir="cache")  # doctest: +SKIP
"""

from __future__ import annotations

from embedkit.utils.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "EmbeddingCache": "embedkit.mining.cache",
    "model_fingerprint": "embedkit.mining.cache",
    "MiningConfig": "embedkit.mining.config",
    "normalize_text": "embedkit.mining.filters",
    "select_negatives": "embedkit.mining.filters",
    "build_index": "embedkit.mining.index",
    "search": "embedkit.mining.index",
    "MiningResult": "embedkit.mining.miner",
    "MiningStats": "embedkit.mining.miner",
    "embed_texts": "embedkit.mining.miner",
    "mine_hard_negatives": "embedkit.mining.miner",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
