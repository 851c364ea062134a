"""The training record every stage exchanges: one query with its positives, negatives and scores.

Readers (``embedkit.data``) produce :class:`Pair` records, the miner fills ``negatives`` (and teacher
scores), the trainer consumes them. Keeping one record type is what lets data flow one way.

Example:
    >>> from embedkit.data.schema import Pair
    >>> p = Pair(query="list files", positives=["ls - list directory contents"])
    >>> p.positives[0]
    'ls - list directory contents'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Pair:
    """One training example.

    Attributes:
        query: the query text.
        positives: one or more relevant documents (at least one).
        negatives: optional hard negatives (filled by ``embedkit mine``).
        positive_scores / negative_scores: optional teacher scores aligned with ``positives`` / ``negatives``
            (used by listwise distillation).
        instruction: optional task instruction prepended to the query (E5 / NV-Embed style).
        dataset: name of the dataset the pair comes from (task-homogeneous batching).
        id: optional stable id of the query.
        query_type: how the query was made, for synthetic pairs (``question``, ``keyword``, ``title``, ``claim``,
            ``crop``; ``embedkit synth``), so results can be broken down by type.
        doc_id: id of the corpus document the query was generated from (synthetic pairs).
    """

    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None
    instruction: str | None = None
    dataset: str = "default"
    id: str | None = None
    query_type: str | None = None
    doc_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict without empty optional fields (the JSONL format the readers accept)."""
        out = {k: v for k, v in asdict(self).items() if v not in (None, [])}
        if out.get("dataset") == "default":
            out.pop("dataset")
        return out
