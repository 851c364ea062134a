"""Teacher scores of positives and negatives, for listwise distillation.

A teacher is a local folder: a sentence-transformers ``CrossEncoder`` (``teacher_type="cross"``: the score of the
(query, document) pair as ``CrossEncoder.predict`` returns it, i.e. after the model's activation) or a bi-encoder
(``teacher_type="bi"``: cosine similarity of the query and document embeddings). No cross-encoder ships offline;
train one in-house or use a stronger bi-encoder.

A bi-encoder teacher embeds through ``embed_fn`` when one is given: the miner passes its cached
:func:`embedkit.mining.miner.embed_texts`, so the teacher's vectors land in the same embedding cache. This module
does not import the miner (the miner imports it): data flows one way.

Example:
    >>> from embedkit.mining.teacher import Teacher
    >>> teacher = Teacher.load("path/to/cross-encoder", "cross")                    # doctest: +SKIP
    >>> teacher.score_lists(["query"], [["doc a", "doc b"]])                        # doctest: +SKIP
    [[0.91, 0.12]]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedkit.errors import ModelError

__all__ = ["EmbedFn", "Teacher"]

#: ``embed_fn(model, texts, role)`` -> L2-normalised float32 ``(len(texts), dim)`` embeddings
EmbedFn = Callable[[Any, list[str], str], np.ndarray]


@dataclass
class Teacher:
    """A loaded teacher; use :meth:`load`."""

    model: Any
    kind: Literal["cross", "bi"]
    source: str
    batch_size: int = 32
    embed_fn: EmbedFn | None = None

    @classmethod
    def load(cls, path: str | os.PathLike, kind: Literal["cross", "bi"] = "cross", *, batch_size: int = 32,
             embed_fn: EmbedFn | None = None, trust_remote_code: bool = False) -> Teacher:
        """Load a CrossEncoder or bi-encoder folder (local only, safetensors only).

        ``embed_fn`` (bi-encoders only) replaces plain :func:`embedkit.encode`, e.g. by a cached encoder."""
        if kind not in ("cross", "bi"):
            raise ModelError(f"unknown teacher type '{kind}'", where="--teacher-type", hint="use cross or bi")
        folder = Path(path)
        if kind == "bi":
            from embedkit.models import load_model

            model = load_model(str(path), trust_remote_code=trust_remote_code)
        else:
            if not folder.is_dir() or not (folder / "config.json").exists():
                raise ModelError(f"teacher '{path}' is not a CrossEncoder folder (no config.json)",
                                 where="--teacher", hint="pass a folder saved with CrossEncoder.save(path)")
            from embedkit.models.folders import refuse_pickle_weights

            refuse_pickle_weights(folder, where="--teacher")
            if not any(folder.rglob("*.safetensors")):
                raise ModelError(f"teacher '{path}' has no safetensors weights; embedkit loads no pickle",
                                 where="--teacher", hint="re-save it with safe_serialization=True")
            from sentence_transformers import CrossEncoder

            try:
                model = CrossEncoder(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load CrossEncoder '{path}': {exc}", where="--teacher",
                                 hint="pass a folder saved with CrossEncoder.save(path)") from None
        return cls(model=model, kind=kind, source=str(path), batch_size=batch_size, embed_fn=embed_fn)

    def score_lists(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[list[float]]:
        """Scores of ``docs[i][j]`` for ``queries[i]`` (same nesting as ``docs``)."""
        flat = self.score_pairs([(q, d) for q, ds in zip(queries, docs) for d in ds],
                                show_progress_bar=sum(len(ds) for ds in docs) > 2000)
        out: list[list[float]] = []
        start = 0
        for ds in docs:
            out.append([float(x) for x in flat[start:start + len(ds)]])
            start += len(ds)
        return out

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, show_progress_bar: bool = False) -> np.ndarray:
        """float32 scores of ``(query, document)`` pairs, in order, batched by ``batch_size``.

        float32 is what both teacher kinds compute, so a score read back from the on-disk score cache
        (:mod:`embedkit.mining.scores`) is bit-identical to a freshly computed one.

        Example:
            >>> teacher.score_pairs([("query", "doc a"), ("query", "doc b")])              # doctest: +SKIP
            array([0.91, 0.12], dtype=float32)
        """
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        flat_q = [q for q, _ in pairs]
        flat_d = [d for _, d in pairs]
        if self.kind == "cross":
            raw = self.model.predict(list(zip(flat_q, flat_d)), batch_size=self.batch_size,
                                     show_progress_bar=show_progress_bar, convert_to_numpy=True)
            flat = np.asarray(raw, dtype=np.float32).reshape(len(flat_d), -1)[:, -1]
        else:
            q_emb, d_emb = self._bi_embeddings(flat_q, flat_d)
            flat = np.einsum("ij,ij->i", q_emb, d_emb).astype(np.float32)
        return np.ascontiguousarray(flat, dtype=np.float32)

    def fingerprint(self) -> dict[str, Any]:
        """What determines this teacher's scores besides the texts -- the score cache's key.

        The weights enter through :func:`embedkit.mining.cache.model_fingerprint` of the folder (weight files'
        names, sizes and mtimes, and the resolved path), so a retrained or edited teacher never reuses old scores.
        """
        from embedkit.mining.cache import model_fingerprint

        source: str | None = self.source
        if self.kind == "bi" and not Path(self.source).is_dir():  # an alias such as "minilm": its folder
            from embedkit.models import resolve_model_path

            source = str(resolve_model_path(self.source))
        if source is not None and not Path(source).is_dir():
            source = None  # hash the parameters instead
        key: dict[str, Any] = {"kind": self.kind, "model": model_fingerprint(self.model, source)}
        if self.kind == "bi":  # a bi-encoder's cosine also depends on its prompts and length limit
            key["prompts"] = getattr(self.model, "prompts", None)
            key["max_seq_length"] = getattr(self.model, "max_seq_length", None)
        else:
            key["max_length"] = getattr(self.model, "max_length", None)
        return key

    def _bi_embeddings(self, flat_q: list[str], flat_d: list[str]) -> tuple[np.ndarray, np.ndarray]:
        embed = self.embed_fn or self._encode
        uq = list(dict.fromkeys(flat_q))
        ud = list(dict.fromkeys(flat_d))
        qe = np.asarray(embed(self.model, uq, "query"), dtype=np.float32)
        de = np.asarray(embed(self.model, ud, "document"), dtype=np.float32)
        qi = {t: i for i, t in enumerate(uq)}
        di = {t: i for i, t in enumerate(ud)}
        return qe[[qi[t] for t in flat_q]], de[[di[t] for t in flat_d]]

    def _encode(self, model: Any, texts: list[str], role: str) -> np.ndarray:
        from embedkit.encode import encode

        return encode(model, texts, role=role, batch_size=self.batch_size, normalize=True)  # type: ignore[return-value]
