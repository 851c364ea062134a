"""Build the Linux man-pages retrieval sample (a BEIR folder) from the Debian ``manpages`` packages.

query    = the NAME one-liner of a page (the text after ``name \\-``), e.g. "open and possibly create a file"
document = the page's DESCRIPTION section, rendered with groff and stripped of formatting

Only pages that ``dpkg -L manpages manpages-dev`` lists are used (English sections 1-8); symlinks and ``.so``
stubs (aliases of another page) are skipped, so every page is one real (query, document) pair. Pages whose
one-liner or description is shared with another page (near-duplicate aliases) are dropped, so that every query
has exactly one relevant document and no indistinguishable twin.

Needs: Debian/Ubuntu with ``apt-get install -y manpages manpages-dev groff-base``.

Usage::

    python eval/build_manpages.py                                   # -> embedkit/datasets/manpages
    python eval/build_manpages.py --out /tmp/manpages --overwrite --max-chars 0   # full descriptions
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from embedkit.data.beir import BeirData, write_beir

PACKAGES = ("manpages", "manpages-dev")
COPYRIGHT = "/usr/share/doc/manpages/copyright"  # identical in manpages-dev
_PAGE_RE = re.compile(r"^/usr/share/man/man[1-8]/[^/]+\.[1-8][a-z]*\.gz$")
_HEADING_RE = re.compile(r"^[A-Z][A-Z0-9 ,/()'&-]*$")


@dataclass
class Page:
    path: str
    page_id: str
    query: str
    document: str


def list_pages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Real man-page files of ``packages`` (from ``dpkg -L``), without symlinks and ``.so`` stubs, sorted."""
    out = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True, check=True).stdout
    pages = []
    for line in out.splitlines():
        path = line.strip()
        if not _PAGE_RE.match(path) or os.path.islink(path) or not os.path.isfile(path):
            continue
        if _is_so_stub(path):
            continue
        pages.append(path)
    return sorted(set(pages))


def _is_so_stub(path: str) -> bool:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(('.\\"', "'\\\"")) or not line.strip():
                continue
            return line.startswith(".so ")
    return True


def render(path: str) -> str:
    """Plain text of a page: groff with tbl, very long lines (one paragraph per line), no bold/underline."""
    with gzip.open(path, "rb") as f:
        src = f.read()
    proc = subprocess.run(
        ["groff", "-k", "-t", "-mandoc", "-Tutf8", "-rLL=8000n", "-rHY=0", "-P-cbou"],
        input=src, capture_output=True, check=False, env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    return proc.stdout.decode("utf-8", errors="replace")


def sections(text: str) -> dict[str, list[str]]:
    """``HEADING -> body lines`` of a rendered page (headings start at column 0 in capitals)."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    lines = text.splitlines()
    for line in lines[1:-1]:  # first and last lines are the running header and footer
        if line and not line[0].isspace() and _HEADING_RE.match(line.strip()):
            current = line.strip()
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line)
    return out


def clean(lines: list[str]) -> str:
    """Join lines into one string with single spaces (formatting already removed by groff)."""
    return " ".join(" ".join(lines).split())


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` at the last sentence end before ``max_chars`` (0 = no limit)."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind(".) "))
    return cut[: end + 1] if end > max_chars // 2 else cut.rsplit(" ", 1)[0]


def parse(path: str, max_chars: int) -> Page | None:
    secs = sections(render(path))
    name = clean(secs.get("NAME", []))
    desc = clean(secs.get("DESCRIPTION", []))
    if " - " not in name or len(desc) < 20:
        return None
    query = name.split(" - ", 1)[1].strip()
    if not query:
        return None
    base = os.path.basename(path)[: -len(".gz")]
    return Page(path=path, page_id=base, query=query, document=truncate(desc, max_chars))


def build(max_chars: int = 4000, workers: int = 2) -> tuple[BeirData, dict[str, int]]:
    files = list_pages()
    with ThreadPoolExecutor(workers) as pool:
        parsed = list(pool.map(lambda p: parse(p, max_chars), files))
    pages = [p for p in parsed if p is not None]
    q_count = Counter(p.query.lower() for p in pages)
    d_count = Counter(p.document for p in pages)
    kept = [p for p in pages if q_count[p.query.lower()] == 1 and d_count[p.document] == 1]
    stats = {"files": len(files), "parsed": len(pages), "kept": len(kept)}
    data = BeirData(
        corpus={p.page_id: {"title": "", "text": p.document} for p in kept},
        queries={f"q-{p.page_id}": p.query for p in kept},
        qrels={f"q-{p.page_id}": {p.page_id: 1} for p in kept},
        name="manpages",
    )
    return data, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "embedkit" / "datasets" / "manpages"))
    ap.add_argument("--max-chars", type=int, default=4000,
                    help="cut each description at a sentence end before this many characters (0: keep all)")
    ap.add_argument("--overwrite", action="store_true", help="replace the data files of an existing folder")
    args = ap.parse_args(argv)
    data, stats = build(args.max_chars)
    out = Path(args.out)
    readme = out / "README.md"
    if out.exists() and not args.overwrite:
        print(f"{out} exists; pass --overwrite", file=sys.stderr)
        return 2
    notes = readme.read_bytes() if readme.is_file() else None  # keep the hand-written notes across rebuilds
    write_beir(data, out, overwrite=args.overwrite)
    if notes is not None:
        (out / "README.md").write_bytes(notes)
    # the packages' machine-readable copyright file lists every page's licence (with full texts)
    (out / "LICENSE").write_bytes(Path(COPYRIGHT).read_bytes())
    print(f"{stats['files']} page files, {stats['parsed']} with NAME + DESCRIPTION, {stats['kept']} unique pairs "
          f"-> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
