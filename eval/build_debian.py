"""Build the Debian package-description retrieval data set (query = synopsis, document = long description).

Why this data: it is real, English, technical, licensed for redistribution (DFSG), reachable offline through apt,
and full of near-duplicates (l10n packs, Perl / Go / R / Tryton families) -- exactly the hard negatives a miner must
find and the leaks a split must avoid.

Steps:
  1. ``apt-get update -o Acquire::Languages=en`` (retried while another process holds the apt lock) so that
     ``/var/lib/apt/lists/*_i18n_Translation-en.lz4`` exist; read them (and the ``Packages`` lists, for the source
     package of each binary) with ``/usr/lib/apt/apt-helper cat-file``.
  2. Keep a package when its long description is used by no other package and its synopsis by no other package.
  3. Group packages into *families* (source package; name-prefix families such as ``perl``, ``golang``, ``r``,
     ``python3``, ``node``, ``tryton``; see :func:`family_of`) and split train/test by family, so near-duplicates
     never cross the split.
  4. Write ``train.jsonl`` (train families) and ``beir/`` (test queries; the corpus holds ALL documents).

Usage::

    # full build for benchmarks (not committed)
    python eval/build_debian.py --out /tmp/debian_full
    # the small sample committed as package data
    python eval/build_debian.py --out /tmp/debian_full --sample-out embedkit/datasets/debian
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from glob import glob
from pathlib import Path

from embedkit.data.beir import BeirData, write_beir
from embedkit.data.readers import write_pairs
from embedkit.data.schema import Pair
from embedkit.utils.io import atomic_dir

LISTS = "/var/lib/apt/lists"
APT_HELPER = "/usr/lib/apt/apt-helper"

#: source-name suffixes that mark a language-ecosystem family (``libfoo-perl`` -> ``perl``)
SUFFIX_FAMILIES = ("-perl", "-java", "-ocaml", "-clojure", "-cil")


@dataclass
class Entry:
    package: str
    synopsis: str
    body: str
    source: str


def apt_update(retries: int = 30) -> None:
    """``apt-get update`` with English translations; retries while another process holds the lock."""
    for attempt in range(retries):
        proc = subprocess.run(["apt-get", "update", "-o", "Acquire::Languages=en"], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        if "lock" in (proc.stderr + proc.stdout).lower():
            time.sleep(5)
            continue
        raise SystemExit(f"apt-get update failed: {proc.stderr.strip().splitlines()[-1:]}")
    raise SystemExit("apt-get update: the apt lock stayed busy; retry later")


def cat_file(path: str) -> str:
    out = subprocess.run([APT_HELPER, "cat-file", path], capture_output=True, check=True)
    return out.stdout.decode("utf-8", errors="replace")


def paragraphs(text: str):
    for block in text.split("\n\n"):
        if block.strip():
            yield block


def parse_long(lines: list[str]) -> str:
    """Debian long-description lines (leading space; `` .`` = blank line) -> plain text paragraphs."""
    out: list[str] = []
    for line in lines:
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            out.append("\n")
        else:
            out.append(line.strip() + " ")
    text = "".join(out)
    return "\n".join(" ".join(p.split()) for p in text.split("\n") if p.strip())


def read_sources() -> dict[str, str]:
    """binary package -> source package (the binary's own name when no ``Source:`` field)."""
    mapping: dict[str, str] = {}
    for path in sorted(glob(f"{LISTS}/*_Packages.lz4")) + sorted(glob(f"{LISTS}/*_Packages")):
        for block in paragraphs(cat_file(path)):
            pkg = src = None
            for line in block.splitlines():
                if line.startswith("Package: "):
                    pkg = line[9:].strip()
                elif line.startswith("Source: "):
                    src = line[8:].split("(")[0].strip()
            if pkg and pkg not in mapping:
                mapping[pkg] = src or pkg
    return mapping


def read_translations() -> list[Entry]:
    files = sorted(glob(f"{LISTS}/*_i18n_Translation-en.lz4")) + sorted(glob(f"{LISTS}/*_i18n_Translation-en"))
    if not files:
        raise SystemExit("no *_i18n_Translation-en lists: run with --apt-update (needs root and network to Debian)")
    # main archive first, so security/updates copies of the same package are ignored
    files.sort(key=lambda p: ("security" in p or "updates" in p, p))
    sources = read_sources()
    entries: dict[str, Entry] = {}
    for path in files:
        for block in paragraphs(cat_file(path)):
            lines = block.splitlines()
            pkg = None
            for i, line in enumerate(lines):
                if line.startswith("Package: "):
                    pkg = line[9:].strip()
                elif line.startswith("Description-en: ") and pkg:
                    synopsis = line[16:].strip()
                    body = parse_long(lines[i + 1:])
                    if pkg not in entries and synopsis and body:
                        entries[pkg] = Entry(pkg, synopsis, body, sources.get(pkg, pkg))
                    break
    return list(entries.values())


def family_of(source: str) -> str:
    """Family key of a source package: language-ecosystem suffix (``perl``) or the first ``-`` token
    (``golang-github-x`` -> ``golang``, ``r-cran-x`` -> ``r``, ``tryton-modules-x`` -> ``tryton``)."""
    for suffix in SUFFIX_FAMILIES:
        if source.endswith(suffix):
            return suffix[1:]
    return source.split("-")[0]


def clean(entries: list[Entry], min_body_chars: int = 40) -> list[Entry]:
    body_count = Counter(e.body for e in entries)
    syn_count = Counter(e.synopsis.casefold() for e in entries)
    return [e for e in entries
            if body_count[e.body] == 1 and syn_count[e.synopsis.casefold()] == 1 and len(e.body) >= min_body_chars]


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_by_family(entries: list[Entry], test_fraction: float,
                    max_family_share: float = 0.1) -> tuple[list[Entry], list[Entry]]:
    """Families in a fixed pseudo-random order fill the test split up to ``test_fraction``; the rest is train.

    A family larger than ``max_family_share`` of the test split always goes to train, so that no single ecosystem
    (python3-*, perl) dominates the test queries."""
    fams: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        fams[family_of(e.source)].append(e)
    target = int(len(entries) * test_fraction)
    test: list[Entry] = []
    train: list[Entry] = []
    for name in sorted(fams, key=_h):
        group = fams[name]
        fits = len(test) + len(group) <= target and len(group) <= max_family_share * target
        (test if fits else train).extend(group)
    return sorted(train, key=lambda e: e.package), sorted(test, key=lambda e: e.package)


def to_pair(e: Entry) -> Pair:
    return Pair(query=e.synopsis, positives=[e.body], dataset="debian", id=e.package)


def write_split(train: list[Entry], test: list[Entry], corpus_entries: list[Entry], out: Path, *,
                gz: bool, overwrite: bool) -> None:
    suffix = ".gz" if gz else ""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_pairs((to_pair(e) for e in train), tmp / f"train.jsonl{suffix}")
        data = BeirData(corpus={f"d-{e.package}": {"title": "", "text": e.body} for e in corpus_entries},
                        queries={f"q-{e.package}": e.synopsis for e in test},
                        qrels={f"q-{e.package}": {f"d-{e.package}": 1} for e in test}, name="debian")
        write_beir(data, tmp / "beir")
        if gz:
            corpus = tmp / "beir" / "corpus.jsonl"
            with open(corpus, "rb") as src, gzip.GzipFile(corpus.with_suffix(".jsonl.gz"), "wb", mtime=0) as dst:
                dst.write(src.read())
            corpus.unlink()
        stats = {"train_pairs": len(train), "test_queries": len(test), "corpus_docs": len(corpus_entries),
                 "train_families": len({family_of(e.source) for e in train}),
                 "test_families": len({family_of(e.source) for e in test})}
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {out}: {stats}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the full build (train.jsonl + beir/)")
    ap.add_argument("--sample-out", help="also write the small committed sample here")
    ap.add_argument("--apt-update", action="store_true", help="run apt-get update -o Acquire::Languages=en first")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--sample-train", type=int, default=4000)
    ap.add_argument("--sample-test", type=int, default=400)
    ap.add_argument("--sample-corpus", type=int, default=11000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    if args.apt_update:
        apt_update()
    raw = read_translations()
    entries = clean(raw)
    print(f"{len(raw)} described packages, {len(entries)} after dropping shared synopses/bodies", file=sys.stderr)
    train, test = split_by_family(entries, args.test_fraction)
    train_fams = {family_of(e.source) for e in train}
    assert not train_fams & {family_of(e.source) for e in test}, "a family crossed the split"
    write_split(train, test, sorted(train + test, key=lambda e: e.package), Path(args.out), gz=False,
                overwrite=args.overwrite)

    if args.sample_out:
        rng = random.Random(args.seed)
        s_train = sorted(rng.sample(train, min(args.sample_train, len(train))), key=lambda e: e.package)
        s_test = sorted(rng.sample(test, min(args.sample_test, len(test))), key=lambda e: e.package)
        chosen = {e.package for e in s_train + s_test}
        rest = [e for e in train + test if e.package not in chosen]
        extra = rng.sample(rest, max(0, min(len(rest), args.sample_corpus - len(chosen))))
        corpus = sorted(s_train + s_test + extra, key=lambda e: e.package)
        sample = Path(args.sample_out)
        # the folder also holds README/LICENSE: write the data into a temp folder, then move the parts in
        tmp_out = sample.parent / f".{sample.name}.build"
        write_split(s_train, s_test, corpus, tmp_out, gz=True, overwrite=True)
        sample.mkdir(parents=True, exist_ok=True)
        import shutil

        for name in ("train.jsonl.gz", "beir", "stats.json"):
            target = sample / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            (tmp_out / name).rename(target)
        shutil.rmtree(tmp_out)
        for path in [sample, *sample.rglob("*")]:  # package data must be readable by every user after install
            path.chmod(0o755 if path.is_dir() else 0o644)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
