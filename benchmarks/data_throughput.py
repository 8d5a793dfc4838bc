"""Documents -> shards throughput of `pgolf.data.docs_to_shards` on the demo corpus: docs/s, tokens/s and MB/s of text.

Trains the sp1024-spec tokenizer on the corpus once (timed apart), then tokenizes the whole corpus into shards with
each requested number of worker processes, `--repeat` times, and reports the best run of each. MB/s counts the UTF-8
bytes of the documents' text (1 MB = 10^6 bytes); the elapsed time covers reading and decompressing the file,
encoding, and writing the shards (the worker pool's start-up included). It also checks that every worker count wrote
the same shard bytes, and reports the peak resident memory of this (the parent) process. `--tile K` runs on K copies
of the corpus, one after the other (a plain JSON lines file), to see the steady state past the start-up costs.

    python benchmarks/data_throughput.py                      # demo/wiki_vital_en.jsonl.xz, 1 worker and all cores
    python benchmarks/data_throughput.py --workers 1 2 4 --repeat 5 --tile 4 --out result.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pgolf.data import cpu_count, docs_to_shards, train_tokenizer  # noqa: E402


def shard_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.bin")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiled(docs: Path, copies: int, folder: Path) -> Path:
    """A plain JSON lines file holding ``copies`` copies of the documents, one after the other."""
    out = folder / f"{docs.name.split('.')[0]}_x{copies}.jsonl"
    with _open(docs) as f:
        raw = f.read()
    with open(out, "wb") as f:
        for _ in range(copies):
            f.write(raw)
    return out


def _open(path: Path):
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=str(REPO / "demo" / "wiki_vital_en.jsonl.xz"), help="JSON lines documents")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default: 1 and all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per worker count; the best is reported")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--val-docs", type=int, default=300)
    parser.add_argument("--shard-tokens", type=int, default=1_000_000)
    parser.add_argument("--tile", type=int, default=1, help="run on this many copies of the documents")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    docs = Path(args.docs)
    if not docs.is_file():
        parser.error(f"--docs {docs}: file not found")
    workers = args.workers or sorted({1, cpu_count()})
    if any(w < 1 for w in workers) or args.repeat < 1 or args.tile < 1:
        parser.error("--workers, --repeat and --tile must be positive")

    with tempfile.TemporaryDirectory(prefix="pgolf-data-bench-") as tmp:
        tmp_dir = Path(tmp)
        t0 = time.perf_counter()
        model = train_tokenizer(docs, tmp_dir / "tok", vocab_size=args.vocab_size)
        tokenizer_s = time.perf_counter() - t0
        print(f"{docs.name}: tokenizer (vocab {args.vocab_size}) trained in {tokenizer_s:.2f} s")
        if args.tile > 1:
            docs = tiled(docs, args.tile, tmp_dir)
            print(f"{docs.name}: {args.tile} copies of the documents")
        runs = []
        digests = set()
        for n in workers:
            best = None
            for r in range(args.repeat):
                out = tmp_dir / f"w{n}_r{r}"
                stats = docs_to_shards(docs, model, out, "bench", args.val_docs, args.shard_tokens, threads=n)
                digests.add(shard_digest(out))
                if best is None or stats["elapsed_s"] < best["elapsed_s"]:
                    best = stats
            run = {
                "workers": n,
                "docs": best["docs"],
                "tokens": best["tokens"],
                "text_bytes": best["text_bytes"],
                "elapsed_s": round(best["elapsed_s"], 4),
                "docs_per_s": round(best["docs_per_s"], 1),
                "tokens_per_s": round(best["tokens_per_s"], 1),
                "text_mb_per_s": round(best["text_mb_per_s"], 3),
            }
            runs.append(run)
            print(
                f"workers {n:>3}: {run['docs']} docs, {run['tokens']:,} tokens, {run['text_bytes'] / 1e6:.2f} MB text"
                f" in {run['elapsed_s']:.3f} s -> {run['docs_per_s']:,.0f} docs/s, {run['tokens_per_s']:,.0f} tokens/s,"
                f" {run['text_mb_per_s']:.2f} MB/s (best of {args.repeat})"
            )
    rss = peak_rss_mb()
    same = len(digests) == 1
    print(f"identical shards for every worker count: {same}; peak RSS of this process {rss:.0f} MB")
    result = {
        "docs_file": str(args.docs),
        "tile": args.tile,
        "cpu_count": cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tokenizer_train_s": round(tokenizer_s, 3),
        "runs": runs,
        "identical_shards": same,
        "peak_rss_mb": round(rss, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
