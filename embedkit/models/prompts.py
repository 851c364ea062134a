"""Per-role prompts (query / document) and per-task instructions in the common styles.

Styles:

* ``none``      -- no prefixes (all-MiniLM-L6-v2 and most sentence-transformers models).
* ``e5``        -- ``"query: "`` / ``"passage: "``.
* ``instructor``-- ``"Represent the question for retrieving supporting documents: "`` / ``"Represent the document for retrieval: "``.
* ``nv-embed``  -- ``"Instruct: {instruction}\\nQuery: "`` for queries, nothing for documents.

Prompts are stored in the sentence-transformers model config (``prompts``), so ``SentenceTransformer(path)
.encode(texts, prompt_name="query")`` keeps working after saving. Pair ``exclude_prompt=True`` pooling with
instruction prompts so the instruction tokens do not dilute the embedding (NV-Embed, INSTRUCTOR).

Example:
    >>> from embedkit.models.prompts import build_prompts
    >>> build_prompts("e5")
    {'query': 'query: ', 'document': 'passage: '}
    >>> build_prompts("nv-embed", instruction="Given a question, retrieve passages that answer it")["query"]
    'Instruct: Given a question, retrieve passages that answer it\\nQuery: '
"""

from __future__ import annotations

from embedkit.errors import ConfigError

PROMPT_STYLES: tuple[str, ...] = ("none", "e5", "instructor", "nv-embed")
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def build_prompts(style: str = "none", instruction: str | None = None) -> dict[str, str]:
    """Return ``{"query": ..., "document": ...}`` prefixes for ``style`` (and the task ``instruction``)."""
    if style == "none":
        return {"query": "", "document": ""}
    if style == "e5":
        return {"query": "query: ", "document": "passage: "}
    if style == "instructor":
        task = instruction or "Represent the question for retrieving supporting documents"
        return {"query": f"{task.rstrip(': ')}: ", "document": "Represent the document for retrieval: "}
    if style == "nv-embed":
        return {"query": f"Instruct: {instruction or DEFAULT_INSTRUCTION}\nQuery: ", "document": ""}
    raise ConfigError(
        f"unknown prompt style '{style}'", where="prompts.style", hint=f"use one of {', '.join(PROMPT_STYLES)}"
    )


def query_prompt_for(instruction: str | None, style: str, default: str) -> str:
    """The query prefix for one record: its own instruction (if the style uses instructions) else ``default``."""
    if instruction and style in ("nv-embed", "instructor"):
        return build_prompts(style, instruction)["query"]
    return default
