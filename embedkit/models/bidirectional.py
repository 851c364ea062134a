"""Switch a decoder LLM to bidirectional attention with transformers' native ``is_causal`` flag (>= 5.2).

We set ``config.is_causal = False`` *before* the model is built (``AutoModel.from_pretrained(path, is_causal=False)``
raises ``TypeError``; setting ``module.is_causal`` alone breaks padding under sdpa and is ignored by eager). The
flag survives ``save_pretrained``, so a saved checkpoint reloads bidirectional.

Only architectures whose bidirectional path we test (left/right padding, sdpa and eager) are allowed; anything
else is refused loudly rather than silently staying causal.

Example:
    >>> from embedkit.models.bidirectional import check_bidirectional_supported
    >>> check_bidirectional_supported("llama")
"""

from __future__ import annotations

from embedkit.errors import ModelError

#: decoder families whose ``is_causal=False`` path is covered by tests/test_bidirectional.py
BIDIRECTIONAL_DECODERS: frozenset[str] = frozenset({"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2"})

#: encoder families: already bidirectional, nothing to switch
ENCODER_TYPES: frozenset[str] = frozenset(
    {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra", "deberta", "deberta-v2", "modernbert",
     "nomic_bert", "new", "camembert", "albert", "t5"}
)


def is_decoder_type(model_type: str) -> bool:
    """True for the causal-LM families embedkit knows (they need the bidirectional switch)."""
    return model_type not in ENCODER_TYPES


def check_bidirectional_supported(model_type: str) -> None:
    """Raise :class:`ModelError` unless ``model_type`` is a tested bidirectional-capable decoder (or an encoder)."""
    if model_type in ENCODER_TYPES or model_type in BIDIRECTIONAL_DECODERS:
        return
    supported = ", ".join(sorted(BIDIRECTIONAL_DECODERS))
    raise ModelError(
        f"bidirectional attention is not verified for architecture '{model_type}'",
        hint=f"use one of {supported}, or set bidirectional: false (causal attention, last-token pooling)",
    )
