"""Prompt templates: one instruction per query type, few-shot turns from the user's own pairs.

Why several types: Tamber et al. find a *mix* of query types beats any single one, so each document's queries
rotate through the configured types. The instruction asks for the query alone; :func:`clean_query` strips what
small models add anyway ("Query:", quotes, a second line).

Example:
    >>> from embedkit.synth.prompts import build_messages, clean_query
    >>> build_messages("ls lists the files of a directory.", "title")[-1]["content"].splitlines()[-1]
    'Write a short title (at most 10 words) for this document. Reply with the title only.'
    >>> clean_query('Query: "list directory files"\\nThis query ...')
    'list directory files'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["QUERY_TYPES", "build_messages", "clean_query", "plain_prompt", "truncate_words"]

#: query type -> the instruction given to the generator
QUERY_TYPES: dict[str, str] = {
    "question": "Write one question that a user could ask and that this document answers.",
    "keyword": "Write a short keyword search query (2 to 5 words, no question) that this document answers.",
    "title": "Write a short title (at most 10 words) for this document.",
    "claim": "Write one short factual statement that this document supports.",
}

#: query type -> what the reply is called in "Reply with the ... only."
_NOUN = {"question": "question", "keyword": "query", "title": "title", "claim": "statement"}

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:search\s+)?(?:query|question|keywords?|title|claim|statement|answer|document)"
                    r"\s*(?:\*\*)?\s*[:\-]\s*", re.IGNORECASE)
#: lead-ins small models put before the query itself: "A user could ask: ...", "The user asks: ...",
#: "This document answers questions about ...", "The document is about ..."
_LEAD_IN = re.compile(r"^(?:(?:an?|the)\s+user\s+(?:(?:could|might|would|can|may)\s+)?asks?\s*:"
                      r"|(?:the|this)\s+document\s+(?:answers\s+(?:the\s+)?(?:questions?|queries)\s+"
                      r"(?:about|on|regarding)|is\s+about|describes|explains)\b)\s*", re.IGNORECASE)


def truncate_words(text: str, max_words: int) -> str:
    """The first ``max_words`` words of ``text`` (whitespace collapsed): bounds the prompt length."""
    words = text.split()
    return " ".join(words[:max_words])


def _user_turn(doc: str, qtype: str) -> str:
    # the document first, the instruction last: SmolLM2-135M put first the instruction and then answered it as a
    # question ("What a great question! ...") far more often
    return f"Document:\n{doc}\n\n{QUERY_TYPES[qtype]} Reply with the {_NOUN[qtype]} only."


def build_messages(doc: str, qtype: str, examples: Sequence[tuple[str, str]] = (),
                   *, max_doc_words: int = 200) -> list[dict[str, str]]:
    """Chat messages asking for one ``qtype`` query about ``doc``; ``examples`` are ``(document, query)`` turns.

    No system message: the model's chat template supplies its own default."""
    messages: list[dict[str, str]] = []
    for ex_doc, ex_query in examples:
        messages.append({"role": "user", "content": _user_turn(truncate_words(ex_doc, max_doc_words), qtype)})
        messages.append({"role": "assistant", "content": ex_query})
    messages.append({"role": "user", "content": _user_turn(truncate_words(doc, max_doc_words), qtype)})
    return messages


def plain_prompt(messages: Sequence[dict[str, str]]) -> str:
    """A completion-style prompt for tokenizers without a chat template (base models, test tokenizers)."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"])
        elif m["role"] == "user":
            parts.append(m["content"])
        else:
            parts.append(f"Query: {m['content']}")
    return "\n\n".join(parts) + "\n\nQuery:"


def clean_query(text: str) -> str:
    """The query in a generation: its first non-empty line, without a leading label or lead-in ("A user could
    ask:"), quotes or markdown bold."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line.strip(), count=1).strip()
    line = _LEAD_IN.sub("", line, count=1).strip()
    line = line.strip("*").strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    elif line[:1] in ("\"", "`") and line.count(line[0]) == 1:  # an opening quote cut off by max_new_tokens
        line = line[1:].strip()
    return line
