"""Peak memory (and time) of `embedkit soup` against loading one checkpoint and a naive load-all-then-average.

Every measurement runs in its own child process and reports that process's peak RSS (``ru_maxrss``), so one
measurement cannot inflate another:

* ``floor``: Python + torch + sentence-transformers + embedkit imported, nothing loaded (the fixed cost);
* ``load-one``: the anchor -- ``SentenceTransformer(ckpt)`` loading one checkpoint and encoding one sentence;
* ``soup``: ``embedkit.soup.soup(N checkpoints, method="uniform")`` writing the averaged model;
* ``naive``: what LM-Cocktail does -- load every member as a ``SentenceTransformer``, average the state dicts in
  memory, ``save`` the result.

Members are all-MiniLM-L6-v2 copies with independent Gaussian weight noise (different seeds), so every member's
file holds different numbers. The acceptance target is ``soup(4) <= 2.5 x load-one``.

Usage::

    python eval/bench_soup.py                    # 4 members
    python eval/bench_soup.py --members 2 4 8    # also shows that the soup's peak does not grow with N
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_mb() -> float:
    """This process's peak RSS in MiB.

    Linux keeps ``ru_maxrss`` across ``execve`` (a child forked from a 700 MiB parent reports >= 700 MiB even if it
    never uses them), so the per-address-space high-water mark ``VmHWM`` is read first; ``ru_maxrss`` is the
    fallback elsewhere. The parent also stays small (no torch import) so both agree.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(mode: str, paths: list[str], out: str | None) -> None:
    """Run one measurement in this (fresh) process and print ``{"mode", "peak_mb", "seconds"}`` as JSON."""
    if mode == "prepare":  # build the members here, so the measuring parent never imports torch
        from embedkit.models import resolve_model_path

        src = Path(resolve_model_path("minilm"))
        members = make_members(src, Path(out or "."), int(paths[0]))
        size = sum(f.stat().st_size for f in src.rglob("*.safetensors")) / 2**20
        print(json.dumps({"members": members, "weights_mib": size}))
        return
    import torch
    from sentence_transformers import SentenceTransformer

    import embedkit.soup  # noqa: F401  (the floor includes embedkit's imports)

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if mode == "load-one":
        model = SentenceTransformer(paths[0], device="cpu")
        model.encode(["one sentence"])
    elif mode == "soup":
        from embedkit.soup import soup

        soup(paths, output=out)
    elif mode == "naive":
        models = [SentenceTransformer(p, device="cpu") for p in paths]
        states = [m.state_dict() for m in models]
        avg = {k: sum(s[k].double() for s in states) / len(states) if v.is_floating_point() else v
               for k, v in states[0].items()}
        models[0].load_state_dict({k: v.to(states[0][k].dtype) for k, v in avg.items()})
        models[0].save(out)
    elif mode != "floor":
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"mode": mode, "peak_mb": _peak_mb(), "seconds": time.perf_counter() - t0}))


def _run_child(mode: str, paths: list[str], out: Path | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, *paths]
    if out is not None:
        cmd += ["--out", str(out)]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_members(src: Path, work: Path, n: int, scale: float = 0.02) -> list[str]:
    """``n`` copies of ``src`` with seeded Gaussian noise on every float tensor (written with safetensors)."""
    import torch
    from safetensors.torch import load_file, save_file

    out = []
    for seed in range(n):
        dst = work / f"member{seed}"
        if not dst.exists():
            shutil.copytree(src, dst)
            gen = torch.Generator().manual_seed(seed)
            for f in dst.rglob("*.safetensors"):
                state = load_file(f)
                save_file({k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                           for k, v in state.items()}, f, metadata={"format": "pt"})
        out.append(str(dst))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[4], help="soup sizes to measure (default: 4)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive load-all-then-average run")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.paths, args.out)
        return

    with tempfile.TemporaryDirectory(prefix="bench-soup-") as tmp:
        work = Path(tmp)
        prep = _run_child("prepare", [str(max(args.members))], work)
        members, size_mb = prep["members"], prep["weights_mib"]
        rows = [_run_child("floor", []), _run_child("load-one", [members[0]])]
        one = rows[1]["peak_mb"]
        for n in args.members:
            r = _run_child("soup", members[:n], work / f"soup{n}")
            r["members"] = n
            rows.append(r)
            if not args.no_naive:
                r = _run_child("naive", members[:n], work / f"naive{n}")
                r["members"] = n
                rows.append(r)
    print(f"all-MiniLM-L6-v2 weights: {size_mb:.1f} MiB per checkpoint; peak RSS per child process")
    print(f"{'measurement':<28}{'peak RSS MiB':>14}{'x load-one':>12}{'seconds':>10}")
    for r in rows:
        label = r["mode"] + (f" ({r['members']} members)" if "members" in r else "")
        print(f"{label:<28}{r['peak_mb']:>14.0f}{r['peak_mb'] / one:>12.2f}{r['seconds']:>10.2f}")
    for n in args.members:
        s = next(r for r in rows if r["mode"] == "soup" and r["members"] == n)
        line = f"soup({n}) / load-one = {s['peak_mb'] / one:.2f} (target <= 2.5)"
        nv = next((r for r in rows if r["mode"] == "naive" and r["members"] == n), None)
        if nv:
            line += f"; naive({n}) / soup({n}) = {nv['peak_mb'] / s['peak_mb']:.2f} peak RSS"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"weights_mib": size_mb, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
