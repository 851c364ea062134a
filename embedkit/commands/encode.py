"""``embedkit encode``: embed the texts of a file into a ``.npy`` matrix (+ ids).

Input formats are those of the rest of embedkit (:mod:`embedkit.data.texts`, same readers as pairs):
``.jsonl`` (a ``text`` field, optional ``id``), ``.csv`` / ``.tsv`` (a header with a ``text`` column; quoted cells
may span lines), ``.parquet``, each optionally ``.gz``; anything else is one text per line. A record without an
``id`` gets its line number.

Outputs (``OUT.npy``, float32 ``(n, dim)``, and ``OUT.ids.txt``, one id per line) are checked before the model
loads and written together, atomically: a failed run leaves neither, nor any folder it created.

Example::

    embedkit encode --model minilm --input docs.csv --role document --output docs.npy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedkit.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="embed the texts of a JSONL/CSV/Parquet/text file into a .npy file")
    p.add_argument("--model", default="minilm", help="model folder or alias (default: minilm)")
    p.add_argument("--input", "-i", required=True,
                   help="texts: .jsonl/.csv/.tsv/.parquet with a 'text' field (.gz ok), or a text file (one per line)")
    p.add_argument("--output", "-o", required=True, help="output .npy path (ids go to OUTPUT.ids.txt)")
    p.add_argument("--role", choices=["query", "document"], help="use the model's prompt for this role")
    p.add_argument("--prompt", help="explicit prefix (overrides --role)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--text-field", default="text", help="field / column holding the text (default: text)")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid records instead of failing")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code to run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embedkit.utils.io import check_output_file, removing_created_parents

    # every check that needs no model comes first: a bad path or option must not cost a model load
    out = Path(args.output)
    if out.suffix != ".npy":
        raise InputError(f"output must end in .npy (got {out.name})", where="--output",
                         hint="e.g. --output embeddings.npy")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1 (got {args.batch_size})", where="--batch-size",
                         hint="e.g. --batch-size 32")
    ids_path = out.with_suffix(".ids.txt")
    check_output_file(out)
    check_output_file(ids_path, where="--output (ids file)")
    with removing_created_parents(out):
        return _encode_to(args, out, ids_path)


def _encode_to(args: argparse.Namespace, out: Path, ids_path: Path) -> int:
    from embedkit.data.texts import read_texts

    data = read_texts(args.input, text_field=args.text_field, skip_invalid=args.skip_invalid)

    import numpy as np

    from embedkit.encode import encode
    from embedkit.models import load_model
    from embedkit.utils.io import atomic_files

    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    emb = encode(model, data.texts, role=args.role, prompt=args.prompt, batch_size=args.batch_size,
                 show_progress_bar=None)
    with atomic_files(out, ids_path) as (tmp_npy, tmp_ids):
        with open(tmp_npy, "wb") as f:
            np.save(f, emb.astype(np.float32))
        Path(tmp_ids).write_text("\n".join(data.ids) + "\n", encoding="utf-8")
    msg = f"wrote {len(data)} embeddings of dim {emb.shape[1]} to {out} (ids: {ids_path})"
    if data.skipped:
        msg += f"; skipped {data.skipped} invalid record(s)"
    print(msg, file=sys.stderr)
    return 0
