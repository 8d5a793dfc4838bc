"""The record's report: the loss curves of every seed (``loss_curves.png``) and the per-seed results table (HTML for
``snakemake --report``, CSV)."""

from __future__ import annotations

import csv
import html
import io

PLOT_NAME = "loss_curves.png"


# The per-seed results table (README, report): header, metrics.json key, format.
SEED_COLUMNS = (
    ("Steps", "steps", ","),
    ("Step avg (ms)", "step_avg_ms", ".2f"),
    ("Train time (s)", "train_time_s", ".1f"),
    ("Pre-quant val_bpb", "pre_quant_val_bpb", ".8f"),
    ("Roundtrip val_bpb", "roundtrip_val_bpb", ".8f"),
    ("Sliding val_bpb", "sliding_val_bpb", ".8f"),
    ("Score val_bpb", "val_bpb", ".8f"),
    ("Artifact bytes", "artifact_bytes", ","),
    ("Total bytes", "bytes_total", ","),
    ("Eval time (s)", "eval_time_s", ".1f"),
)


def loss_curve_png(logs: dict[int, dict]) -> bytes:
    """A PNG of the loss curves of parsed logs ({seed: parse_log(...)}): train_loss per logged step as a line and
    validation val_loss as points, one colour per seed. Same logs, same bytes (no timestamp in the file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    plotted = False
    for i, (seed, info) in enumerate(sorted(logs.items())):
        color = f"C{i % 10}"
        if info["train_losses"]:
            steps, losses = zip(*info["train_losses"], strict=True)
            ax.plot(steps, losses, color=color, linewidth=1.2, label=f"seed {seed} train_loss")
            plotted = True
        if info["val_points"]:
            steps, losses = [p[0] for p in info["val_points"]], [p[1] for p in info["val_points"]]
            ax.plot(steps, losses, "o", color=color, markersize=5, label=f"seed {seed} val_loss")
            plotted = True
    if plotted:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no losses logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    if plotted:
        ax.set_yscale("log")  # the first steps' losses are several times the final ones
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("loss (nats per token, log scale)")
    ax.set_title("Loss curves per seed (from the logs)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def seed_table_html(seeds: list[dict], sub: dict) -> str:
    """The per-seed results table as a small self-contained HTML page (for the Snakemake report)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("Seed", *(h for h, _, _ in SEED_COLUMNS)))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _seed_rows(seeds))
    std_txt = "" if sub["val_bpb_std"] is None else f" ± {sub['val_bpb_std']:.8f}"
    title = html.escape(str(sub.get("name") or "record"))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
        + title
        + "</title><style>table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<p><b>{title}</b>: val_bpb {sub['val_bpb']:.8f}{std_txt} over {len(seeds)} seed(s)</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )


def seed_table_csv(seeds: list[dict]) -> str:
    """The per-seed results as CSV (raw metrics.json values; empty where not measured)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["seed", *(key for _, key, _ in SEED_COLUMNS)])
    for s in seeds:
        writer.writerow(
            [s["seed"], *("" if s["metrics"].get(k) is None else s["metrics"][k] for _, k, _ in SEED_COLUMNS)]
        )
    return buf.getvalue()


def _cell(value, spec: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool) and spec == ",":
        return f"{value:,}"
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


def _seed_rows(seeds: list[dict]) -> list[list[str]]:
    """The per-seed results table's rows as text cells (seed first), formatted as in the README."""
    return [[str(s["seed"])] + [_cell(s["metrics"].get(key), spec) for _, key, spec in SEED_COLUMNS] for s in seeds]
