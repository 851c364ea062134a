"""Offline hard-negative mining: embedding cache, FAISS indexes, positive-aware filters, teacher scores.

Example:
    >>> from embedkit.mining import MiningConfig, mine_hard_negatives
    >>> result = mine_hard_negatives("pairs.jsonl", "minilm", num_negatives=7, cache_dir="cache")  # doctest: +SKIP
"""

from embedkit.mining.cache import EmbeddingCache, model_fingerprint
from embedkit.mining.config import MiningConfig
from embedkit.mining.filters import normalize_text, select_negatives
from embedkit.mining.index import build_index, search
from embedkit.mining.miner import MiningResult, MiningStats, embed_texts, mine_hard_negatives

__all__ = [
    "EmbeddingCache",
    "MiningConfig",
    "MiningResult",
    "MiningStats",
    "build_index",
    "embed_texts",
    "mine_hard_negatives",
    "model_fingerprint",
    "normalize_text",
    "search",
    "select_negatives",
]
