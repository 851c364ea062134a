"""Corpus-only adaptation: synthetic queries from the user's documents (``embedkit synth``).

One concept per module: :mod:`~embedkit.synth.prompts` (query types and templates), :mod:`~embedkit.synth.generator`
(transformers ``generate``, batched and left-padded), :mod:`~embedkit.synth.filters`, :mod:`~embedkit.synth.crop`
(the no-LLM fallback), :mod:`~embedkit.synth.corpus`, :mod:`~embedkit.synth.config` (``SynthConfig``) and
:mod:`~embedkit.synth.pipeline` (``synthesize``, resumable and atomic). The output is ordinary embedkit pairs, so
``embedkit mine`` and ``embedkit train --pairs`` take it unchanged.

Names are imported on first use: ``SynthConfig`` (what ``embedkit synth --help`` needs) loads only pydantic.

Example:
    >>> from embedkit.synth import SynthConfig, synthesize
    >>> result = synthesize("docs.jsonl", "pairs.jsonl", SynthConfig(model="smollm2"))  # doctest: +SKIP
"""

from __future__ import annotations

from embedkit.utils.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "SynthConfig": "embedkit.synth.config",
    "Document": "embedkit.synth.corpus",
    "read_documents": "embedkit.synth.corpus",
    "crop_queries": "embedkit.synth.crop",
    "FilterStats": "embedkit.synth.filters",
    "Generator": "embedkit.synth.generator",
    "QUERY_TYPES": "embedkit.synth.prompts",
    "SynthResult": "embedkit.synth.pipeline",
    "partial_path": "embedkit.synth.pipeline",
    "synthesize": "embedkit.synth.pipeline",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
