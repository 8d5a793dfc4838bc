"""``pgolf compare``: two record folders (ours or upstream) side by side, each read at the score it submitted, with
the one-sided Welch t-test of ``pgolf.stats`` and the challenge's rules for a new record."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pgolf.check import UNKNOWN_SEED, inspect_record
from pgolf.recordfolder import disclosed_best_of, parse_record
from pgolf.stats import mean, std, welch_one_sided

README_RULE_NATS = 0.005  # the challenge README: beat the leader by >= 0.005 nats ...
README_RULE_P = 0.01  # ... at p < 0.01
CLOSING_RULE_P = 0.25  # the final leaderboard pass: one-sided Welch t-test at p < 0.25


def record_seed_scores(record_dir: str | os.PathLike) -> dict:
    """Per-seed scores of a record folder: {seed: {"val_bpb", "val_loss"}}, where they came from, which kind of score
    line (``score_kind``: the one the record submitted, see ``pgolf.check``) and the tokenizer its logs name.

    From the seed logs; else submission.json ``seed_results``; else its top-level val_bpb/val_loss as one value.
    """
    record_dir = Path(record_dir)
    folder = parse_record(record_dir)
    report = inspect_record(folder, require_script=False)
    scores = {
        ("?" if seed == UNKNOWN_SEED else seed): {"val_bpb": v["score"]["val_bpb"], "val_loss": v["score"]["val_loss"]}
        for seed, v in report.seeds.items()
    }
    logs = [report.logs[v["log"]] for v in report.seeds.values()] + [
        report.logs[v["train_log"]] for v in report.seeds.values()
    ]
    tokenizers = sorted({i["tokenizer"] for i in logs} - {None})
    datasets = sorted({i["dataset"] for i in logs} - {None})
    source = f"logs ({report.score_kind} lines)" if scores else ""
    sub = folder.sub
    if not scores:
        for key, entry in (sub.get("seed_results") or {}).items():
            if isinstance(entry, dict) and entry.get("val_bpb") is not None and entry.get("val_loss") is not None:
                scores[str(key)] = {"val_bpb": float(entry["val_bpb"]), "val_loss": float(entry["val_loss"])}
        source = "submission.json seed_results"
    if not scores and sub.get("val_bpb") is not None and sub.get("val_loss") is not None:
        scores["submission"] = {"val_bpb": float(sub["val_bpb"]), "val_loss": float(sub["val_loss"])}
        source = "submission.json val_bpb/val_loss"
    if not scores:
        raise ValueError(f"{record_dir}: no scores in its logs or submission.json")
    return {
        "dir": str(record_dir),
        "name": sub.get("name", record_dir.name),
        "source": source,
        "seeds": scores,
        "score_kind": report.score_kind,
        "score_eval": report.score_eval,
        "tokenizer": ", ".join(tokenizers) or None,
        "dataset": ", ".join(datasets) or None,
        "best_of": disclosed_best_of(sub, folder.readme_text),
    }


def _side(record_dir: str | os.PathLike) -> dict:
    side = record_seed_scores(record_dir)
    bpb = [s["val_bpb"] for s in side["seeds"].values()]
    loss = [s["val_loss"] for s in side["seeds"].values()]
    side.update(
        n=len(bpb),
        mean_bpb=mean(bpb),
        std_bpb=std(bpb),
        mean_loss=mean(loss),
        std_loss=std(loss),
        nats_per_bpb=mean(loss) / mean(bpb),
    )
    return side


def compare_records(a_dir: str | os.PathLike, b_dir: str | os.PathLike) -> dict:
    """Compare record A (the candidate) with record B (e.g. the current leader); lower val_bpb is better.

    ``improvement_bpb`` = mean bpb of B - mean bpb of A (positive: A is better). ``improvement_nats`` converts it to
    nats per token with A's own ratio mean val_loss / mean val_bpb (as upstream records do; raw val_loss of two records
    with different tokenizers is not comparable, it is given as ``val_loss_diff``). The t-test runs on per-seed val_bpb.
    ``clears_readme_rule`` (improvement >= 0.005 nats and p < 0.01) and ``clears_closing_rule`` (p < 0.25) are
    True/False, or None when the p-value cannot be computed and the answer hinges on it.
    """
    a, b = _side(a_dir), _side(b_dir)
    improvement_bpb = b["mean_bpb"] - a["mean_bpb"]
    improvement_nats = improvement_bpb * a["nats_per_bpb"]
    test = welch_one_sided([s["val_bpb"] for s in a["seeds"].values()], [s["val_bpb"] for s in b["seeds"].values()])
    p = test["p_value"]
    # against the README's margin: H0 is "A is better by less than 0.005 nats" (B - A <= margin, in A's bpb units)
    margin_bpb = README_RULE_NATS / a["nats_per_bpb"] if a["nats_per_bpb"] else 0.0
    margin_test = welch_one_sided(
        [s["val_bpb"] + margin_bpb for s in a["seeds"].values()], [s["val_bpb"] for s in b["seeds"].values()]
    )
    if improvement_nats < README_RULE_NATS:
        readme = False
    else:
        readme = None if p is None else p < README_RULE_P
    closing = None if p is None else p < CLOSING_RULE_P
    warnings = []
    single = all(side["dataset"] and "," not in side["dataset"] for side in (a, b))  # one data folder named each
    if a["tokenizer"] != b["tokenizer"] or (single and a["dataset"] != b["dataset"]):
        warnings.append(
            f"different data or tokenizer: A's logs name {a['dataset'] or 'no data set'} / "
            f"{a['tokenizer'] or 'no tokenizer'}, B's {b['dataset'] or 'no data set'} / "
            f"{b['tokenizer'] or 'no tokenizer'}; val_bpb on other data or bytes is not the same measurement"
        )
    for label, side in (("A", a), ("B", b)):
        if side.get("best_of"):
            n, m = side["best_of"]
            warnings.append(
                f"{label} reports the best {n} of {m} seeds (as its record discloses): the t-test assumes seeds not "
                "selected, so its p-value is optimistic"
            )
    ka, kb = a.get("score_eval"), b.get("score_eval")
    if ka and kb and ka != kb:
        warnings.append(
            f"different kinds of score: A's is {a['score_kind']} ({ka}), B's is {b['score_kind']} ({kb}); each is the "
            "score its record submitted"
        )
    return {
        "warnings": warnings,
        "a": a,
        "b": b,
        "improvement_bpb": improvement_bpb,
        "improvement_nats": improvement_nats,
        "val_loss_diff": b["mean_loss"] - a["mean_loss"],
        "t": test["t"],
        "df": test["df"],
        "p_value": p,
        "p_value_reason": test["reason"],
        "margin_bpb": margin_bpb,
        "t_margin": margin_test["t"],
        "p_value_margin": margin_test["p_value"],
        "clears_readme_rule": readme,
        "clears_closing_rule": closing,
    }


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def format_comparison(result: dict) -> str:
    """A readable table of ``compare_records``' result."""
    lines = []
    for label in ("a", "b"):
        side = result[label]
        lines.append(f"{label.upper()}: {side['name']}")
        lines.append(
            f"   {side['dir']}  (scores from {side['source']}; tokenizer {side.get('tokenizer') or 'not logged'})"
        )
        lines.append(f"   {'seed':>12}  {'val_bpb':>12}  {'val_loss':>12}")
        for seed, s in side["seeds"].items():
            lines.append(f"   {seed!s:>12}  {s['val_bpb']:12.8f}  {s['val_loss']:12.8f}")
        lines.append(
            f"   {'mean':>12}  {side['mean_bpb']:12.8f}  {side['mean_loss']:12.8f}   (n={side['n']}, "
            f"std bpb {_fmt(side['std_bpb'], '.6f')}, std loss {_fmt(side['std_loss'], '.6f')})"
        )
    a = result["a"]
    lines.append(
        f"improvement of A over B: {result['improvement_bpb']:+.6f} bpb = {result['improvement_nats']:+.6f} nats "
        f"(at A's {a['nats_per_bpb']:.4f} nats/token per bit/byte; "
        f"raw val_loss difference {result['val_loss_diff']:+.6f})"
    )
    if result["p_value"] is None:
        lines.append(f"Welch t-test: {result['p_value_reason']}")
    else:
        lines.append(
            f"Welch t-test (one-sided, A lower): t = {result['t']:.4f}, df = {result['df']:.2f}, "
            f"p = {result['p_value']:.3e}"
        )

    if result.get("p_value_margin") is not None:
        lines.append(
            f"Welch t-test against the README's {README_RULE_NATS} nats ({result['margin_bpb']:.6f} bpb at A's ratio): "
            f"t = {result['t_margin']:.4f}, p = {result['p_value_margin']:.3e} (H0: A better by less than the margin)"
        )

    def verdict(v: bool | None) -> str:
        return "cannot tell (no p-value)" if v is None else ("yes" if v else "no")

    lines.append(
        f"README rule (>= {README_RULE_NATS} nats and p < {README_RULE_P}): {verdict(result['clears_readme_rule'])}"
    )
    lines.append(f"closing rule (p < {CLOSING_RULE_P}): {verdict(result['clears_closing_rule'])}")
    for w in result.get("warnings", []):
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)


def _cmd_compare(args: argparse.Namespace) -> int:
    """Print the comparison; with ``--strict``, exit 1 unless A clears the README's rule (>= 0.005 nats, p < 0.01)."""
    result = compare_records(args.a, args.b)
    print(format_comparison(result))
    if args.strict and result["clears_readme_rule"] is not True:
        print(f"--strict: A does not clear the README's rule (>= {README_RULE_NATS} nats and p < {README_RULE_P})")
        return 1
    return 0


def register(subparsers) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser("compare", help="compare two record folders (A: candidate, B: reference)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 unless A clears the README's rule (>= 0.005 nats and p < 0.01)"
    )
    p.set_defaults(func=_cmd_compare)
