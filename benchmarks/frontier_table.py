"""The table of benchmarks/frontier_gpu.sh: its rows (phase, what, seconds, outcome), then per script the step time
under the pipeline and under bare torchrun (from each log, the same parser) and where the pipeline run's time went
(pgolf.logs.upstream_phases: training loop, calibration, compression, evaluation, TTT apart).

    python benchmarks/frontier_table.py --rows /tmp/frontier/rows.tsv --logs $OUT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pgolf.logs import upstream_phases  # noqa: E402

TAGS = {"r0611": "1.0611", "r0565": "1.0565 (#2135)"}
PHASES = (
    ("train_loop_s", "train loop"),
    ("calibration_s", "calibration"),
    ("compression_s", "compression"),
    ("decompression_s", "decompression"),
    ("eval_s", "eval"),
    ("ttt_compile_s", "TTT compile"),
    ("ngram_precompute_s", "n-gram precompute"),
    ("ttt_eval_s", "TTT eval"),
    ("total_eval_s", "total_eval_time"),
)


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", required=True, help="the script's rows.tsv")
    ap.add_argument("--logs", required=True, help="the folder of its logs (bare_<tag>.log, train_<tag>.log)")
    args = ap.parse_args(argv)
    logs = Path(args.logs)
    rows = Path(args.rows).read_text().splitlines() if Path(args.rows).is_file() else []
    print(f"{'phase':9} {'what':16} {'seconds':>8}  outcome")
    for r in rows:
        cells = (r.split("\t") + ["", "", "", ""])[:4]
        print(f"{cells[0]:9} {cells[1]:16} {cells[2]:>8}  {cells[3]}")
    print()
    print(f"{'script':16} {'run':9} {'steps':>6} {'ms/step':>9} {'vs bare':>8}")
    phases = {}
    for tag, name in TAGS.items():
        got = {}
        for run, file in (("bare", f"bare_{tag}.log"), ("pipeline", f"train_{tag}.log")):
            path = logs / file
            if path.is_file():
                got[run] = upstream_phases(path)
        if "pipeline" in got:
            phases[name] = got["pipeline"]
        bare_ms = (got.get("bare") or {}).get("step_avg_ms")
        for run in ("bare", "pipeline"):
            p = got.get(run)
            if p is None:
                print(f"{name:16} {run:9} {'-':>6} {'-':>9} {'-':>8}  (no log)")
                continue
            ms = p["step_avg_ms"]
            rel = ""
            if run == "pipeline" and ms and bare_ms:
                diff = 100.0 * (ms / bare_ms - 1)
                rel = f"{diff:+.2f}%  ({'within' if abs(diff) <= 2.0 else 'NOT within'} 2%)"
            print(f"{name:16} {run:9} {_fmt(p['steps'], 'd'):>6} {_fmt(ms, '.2f'):>9} {rel:>8}")
    if phases:
        print()
        print("where the pipeline run's time went (seconds, from the script's own log lines)")
        print(f"{'phase':20}" + "".join(f"{n:>18}" for n in phases))
        for key, label in PHASES:
            print(f"{label:20}" + "".join(f"{_fmt(p[key]):>18}" for p in phases.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
