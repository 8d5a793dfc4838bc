"""Where a pipeline run's time went, per seed and step, from the run's own products (summaries and step logs).

    python benchmarks/pod_table.py WORKDIR [--run RUN]

Per step: the whole job (`stage finished in X s`, printed by `pgolf` around the script), the part the rules time
(train: the timed training steps + GPTQ calibration; quantize: the export; evaluate: the scoring), start-up (train:
imports, data, model, compile and warm-up before the first timed step; evaluate: loading the artifact, the data and
the model), compile (evaluate: the compiled model's warm-up before the timed scoring, when its summary has
`compile_s`; train's compile is inside its start-up) and the rest. Also the Snakemake run's wall time from its log,
when there is one. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path

FINISHED = re.compile(r"stage finished in ([\d.]+) s")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", re.M)


def stage_wall(log: Path) -> float | None:
    m = FINISHED.findall(log.read_text(errors="replace")) if log.is_file() else []
    return float(m[-1]) if m else None


def rows(workdir: Path, run: str) -> list[dict]:
    out = []
    for seed_dir in sorted((workdir / "results" / run).glob("seed_*"), key=lambda p: int(p.name[5:])):
        seed = int(seed_dir.name[5:])
        logs = workdir / "logs" / run / seed_dir.name
        if not all((seed_dir / f).is_file() for f in ("train.json", "quantize.json", "eval.json")):
            print(f"{seed_dir.name}: not finished (a step's summary is missing)", file=sys.stderr)
            continue
        tr = json.loads((seed_dir / "train.json").read_text())
        qu = json.loads((seed_dir / "quantize.json").read_text())
        ev = json.loads((seed_dir / "eval.json").read_text())
        timed = tr["train_time_s"] + tr.get("gptq_calib_time_s", 0.0)
        for step, wall, part, start, comp in (
            ("train", stage_wall(logs / "train.log"), timed, tr.get("startup_s"), None),
            ("quantize", stage_wall(logs / "quantize.log"), qu["quantize_time_s"], None, None),
            ("evaluate", stage_wall(logs / "evaluate.log"), ev["eval_time_s"], ev.get("load_s"), ev.get("compile_s")),
        ):
            rest = None if wall is None else wall - part - (start or 0.0) - (comp or 0.0)
            out.append(
                {
                    "seed": seed,
                    "step": step,
                    "wall": wall,
                    "timed": part,
                    "startup": start,
                    "compile": comp,
                    "rest": rest,
                }
            )
    return out


def snakemake_wall(workdir: Path) -> float | None:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    stamps = [
        datetime.strptime(" ".join(s.split()), "%a %b %d %H:%M:%S %Y") for s in STAMP.findall(logs[-1].read_text())
    ]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("--run", help="the run's name (default: the only one under results/)")
    a = p.parse_args(argv)
    runs = [d.name for d in (a.workdir / "results").iterdir() if d.is_dir()] if (a.workdir / "results").is_dir() else []
    run = a.run or (runs[0] if len(runs) == 1 else None)
    if run is None:
        print(f"{a.workdir}: give --run (runs: {', '.join(runs) or 'none'})", file=sys.stderr)
        return 2
    fmt = lambda x: "" if x is None else f"{x:.1f}"  # noqa: E731
    print("| seed | step | job (s) | timed by the rules (s) | start-up (s) | compile (s) | rest (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows(a.workdir, run):
        cells = [str(r["seed"]), r["step"], *(fmt(r[k]) for k in ("wall", "timed", "startup", "compile", "rest"))]
        print("| " + " | ".join(cells) + " |")
    wall = snakemake_wall(a.workdir)
    if wall is not None:
        print(f"\nSnakemake, first job to last: {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
