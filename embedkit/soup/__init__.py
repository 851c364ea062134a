"""Model soups: average fine-tuned checkpoints (uniform, weighted, greedy by held-out score), streamed through
safetensors, LoRA adapters merged first, optional interpolation with the base model.

See :func:`embedkit.soup.soup` and ``docs/soup.md``.

Example:
    >>> from embedkit.soup import soup
    >>> res = soup(["run1", "run2"], method="uniform", output="soup")     # doctest: +SKIP
    >>> res.members[0].weight                                             # doctest: +SKIP
    0.5
"""

from embedkit.soup.api import GreedyStep, ScoreFn, SoupMember, SoupResult, greedy_select, normalize_weights, soup
from embedkit.soup.checkpoint import Checkpoint, check_compatible, inspect_checkpoint

__all__ = [
    "Checkpoint",
    "GreedyStep",
    "SoupMember",
    "ScoreFn",
    "SoupResult",
    "check_compatible",
    "greedy_select",
    "inspect_checkpoint",
    "normalize_weights",
    "soup",
]
