"""``embedkit encode``: embed a JSONL or text file into a ``.npy`` matrix (+ ids).

Input formats:
  * ``.jsonl``: one object per line with a ``text`` field (and optional ``id``; default: line number);
  * anything else: one text per line (blank lines are an error unless ``--skip-invalid``).

Outputs are written atomically: ``OUT.npy`` (float32, ``(n, dim)``) and ``OUT.ids.txt`` (one id per line).

Example::

    embedkit encode --model minilm --input docs.jsonl --role document --output docs.npy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from embedkit.errors import InputError
from embedkit.utils.io import atomic_file, check_writable_parent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="embed texts from a JSONL/text file into a .npy file")
    p.add_argument("--model", default="minilm", help="model folder or alias (default: minilm)")
    p.add_argument("--input", "-i", required=True, help="JSONL with a 'text' field, or a text file (one per line)")
    p.add_argument("--output", "-o", required=True, help="output .npy path (ids go to OUTPUT.ids.txt)")
    p.add_argument("--role", choices=["query", "document"], help="use the model's prompt for this role")
    p.add_argument("--prompt", help="explicit prefix (overrides --role)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid lines instead of failing")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code to run")
    p.set_defaults(func=run)


def read_texts(path: Path, text_field: str = "text", skip_invalid: bool = False) -> tuple[list[str], list[str], int]:
    """Read ``(ids, texts, skipped)`` from a JSONL or plain text file, with ``file:line`` errors."""
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", hint="check the --input path")
    ids: list[str] = []
    texts: list[str] = []
    skipped = 0
    is_jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    raw = path.read_bytes()
    for lineno, line_bytes in enumerate(raw.splitlines(), start=1):
        where = f"{path}:{lineno}"
        try:
            try:
                line = line_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("line is not valid UTF-8", where=where, hint="re-encode the file as UTF-8") from None
            if not line.strip():
                if is_jsonl:
                    continue
                raise InputError("empty line", where=where, hint="remove blank lines or pass --skip-invalid")
            if is_jsonl:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"invalid JSON ({exc.msg})", where=where, hint="fix the JSON on this line") from None
                if not isinstance(obj, dict):
                    raise InputError("line is not a JSON object", where=where, hint=f'use {{"{text_field}": "..."}}')
                text = obj.get(text_field)
                if text is None:
                    raise InputError(f"field '{text_field}' is missing", where=where,
                                     hint=f"add a '{text_field}' string or pass --text-field")
                if not isinstance(text, str):
                    raise InputError(f"field '{text_field}' is {type(text).__name__}, not a string", where=where,
                                     hint="make it a string")
                if not text.strip():
                    raise InputError(f"field '{text_field}' is empty", where=where, hint="remove the record")
                ids.append(str(obj.get("id", lineno)))
            else:
                text = line
                ids.append(str(lineno))
            texts.append(text)
        except InputError:
            if not skip_invalid:
                raise
            skipped += 1
    if not texts:
        raise InputError(f"{path} holds no texts", hint="give a non-empty file")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InputError(f"duplicate id '{dup}'", where=str(path), hint="make every 'id' unique")
    return ids, texts, skipped


def run(args: argparse.Namespace) -> int:
    from embedkit.encode import encode
    from embedkit.models import load_model

    out = Path(args.output)
    if out.suffix != ".npy":
        raise InputError(f"output must end in .npy (got {out.name})", hint="e.g. --output embeddings.npy")
    check_writable_parent(out)
    ids, texts, skipped = read_texts(Path(args.input), args.text_field, args.skip_invalid)
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    emb = encode(model, texts, role=args.role, prompt=args.prompt, batch_size=args.batch_size,
                 show_progress_bar=None)
    ids_path = out.with_suffix(".ids.txt")
    with atomic_file(out) as tmp_npy, atomic_file(ids_path) as tmp_ids:
        with open(tmp_npy, "wb") as f:
            np.save(f, emb.astype(np.float32))
        Path(tmp_ids).write_text("\n".join(ids) + "\n", encoding="utf-8")
    msg = f"wrote {len(texts)} embeddings of dim {emb.shape[1]} to {out} (ids: {ids_path})"
    if skipped:
        msg += f"; skipped {skipped} invalid line(s)"
    print(msg, file=sys.stderr)
    return 0
