"""The record's README.md: the results, the seed table, the hardware and provenance, how to reproduce it (the
command with every setting the pipeline gave the script) and, with a reference record, the comparison."""

from __future__ import annotations

import html
import os
import re
import shlex
from pathlib import Path

from pgolf.compare import format_comparison
from pgolf.data import load_manifest
from pgolf.pack import HUMAN_NAME
from pgolf.provenance import data_section
from pgolf.report import PLOT_NAME, SEED_COLUMNS, _cell, _seed_rows
from pgolf.stages import EVAL_ENV, QUANTIZE_ENV, data_env, section_env

NON_RECORD_TRACK = "track_non_record_16mb"


def is_non_record(settings: dict) -> bool:
    """Whether the settings describe a non-record (or demo) run."""
    return bool(settings.get("non_record")) or settings.get("track") == NON_RECORD_TRACK


_MD_INLINE = re.compile(r"([\\`*\[\]|~]|(?<!\w)_|_(?!\w))")  # an underscore inside a word is no emphasis
_MD_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")


def md_text(value) -> str:
    """A text field of the config (author, blurb, name, ...) as inert README text: one line, HTML escaped
    (``<script>`` shows as written), markdown's inline marks backslash-escaped, and nothing at its start that would
    open a heading, a list or a quote."""
    text = " ".join(str(value).split())
    text = html.escape(text, quote=False)
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


def md_code(value) -> str:
    """``value`` as an inline code span that a backtick or a table's ``|`` in it cannot end."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def recipe_blurb(env: dict, defaults: dict) -> str:
    """The record's blurb derived from the run's own settings: ``env`` (the script's variables the pipeline set:
    training, quantize and eval) over ``defaults`` (the script's defaults, ``preflight.script_defaults``), so that it
    never describes another config (a 2-layer test model is not "11 layers, XSA ...")."""

    def get(key: str):
        return env.get(key.upper(), defaults.get(key))

    def num(key: str):
        try:
            value = float(get(key))
        except (TypeError, ValueError):
            return None
        return int(value) if value.is_integer() else value

    parts = []
    layers, dim, heads, kv = num("num_layers"), num("model_dim"), num("num_heads"), num("num_kv_heads")
    if layers is not None:
        parts.append(f"{layers} layers" + (f", width {dim}" if dim else ""))
    if heads:
        parts.append(f"{heads} heads" + (f" / {kv} KV heads" if kv and kv != heads else ""))
    if num("mlp_mult"):
        parts.append(f"MLP {num('mlp_mult')}x")
    if num("xsa_last_n"):
        parts.append(f"XSA on the last {num('xsa_last_n')}")
    if _truthy(get("ema_enabled")) and num("ema_decay") is not None:
        parts.append(f"EMA {num('ema_decay')}")
    rope, head_dim = num("rope_dims"), (dim // heads if dim and heads else None)
    if rope and head_dim and rope < head_dim:
        parts.append(f"partial RoPE {rope}/{head_dim}")
    for key, label in (("ln_scale", "LN scale"), ("smear_gate", "SmearGate"), ("unet_skips", "U-Net skips")):
        if _truthy(get(key)):
            parts.append(label)
    if num("bigram_vocab_size"):
        parts.append(f"BigramHash {num('bigram_vocab_size')}x{num('bigram_dim')}")
    if get("recur_layers"):
        parts.append(f"layers {get('recur_layers')} run twice")
    if num("muon_wd") is not None:
        parts.append(f"Muon + AdamW (wd {num('muon_wd')})")
    if _truthy(get("late_qat")) and num("qat_bits"):
        parts.append(f"late int{num('qat_bits')} QAT")
    matrix, mlp, embed = num("quant_bits_matrix"), num("quant_bits_mlp"), num("quant_bits_embed")
    if matrix:
        bits = f"int{matrix}" + (f" (MLP int{mlp})" if mlp and mlp != matrix else "")
        bits += f"/int{embed}" if embed else ""
        codec = get("compressor") if get("compressor") != "auto" else None  # auto: the smallest, see quant_tag
        parts.append(f"{bits} per-row" + (" GPTQ" if _truthy(get("gptq")) else "") + (f" + {codec}" if codec else ""))
    stride, seq = num("eval_stride"), num("eval_seq_len")
    if stride and seq:
        parts.append(f"sliding-window eval stride {stride}" if stride < seq else f"eval in chunks of {seq}")
    return (", ".join(parts) + ".") if parts else ""


def _env_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def reproduce_command(hparams: dict, nproc: int, seed: int | None) -> str:
    """The shell command that reruns one seed: env vars, then torchrun."""
    env = {k: _env_value(v) for k, v in sorted(hparams.items()) if k != "SEED"}
    if seed is not None:
        env["SEED"] = str(seed)
    lines = [f"{k}={shlex.quote(v)} \\" for k, v in env.items()]
    lines.append(f"torchrun --standalone --nproc_per_node={nproc} train_gpt.py")
    return "\n".join(lines)


# Where upstream's data/cached_challenge_fineweb.py puts a data set and its tokenizer, relative to the root of an
# openai/parameter-golf clone, and how deep a record folder sits in it (records/<track>/<folder>/): the README's
# reproducing command runs from the record folder inside such a clone, as a maintainer runs it.
UPSTREAM_DATASETS = "data/datasets"
UPSTREAM_TOKENIZERS = "data/tokenizers"
RECORD_DEPTH = 3


def upstream_layout(data_manifest: str | os.PathLike) -> dict[str, str]:
    """The data set of ``data_manifest`` as an upstream clone holds it: ``folder`` (``fineweb10B_<variant>`` for a hub
    data set, as the challenge's download names it; the data set's name otherwise), ``tokenizer`` (its file name) and
    ``variant`` (hub data sets only)."""
    m = load_manifest(data_manifest)
    source = m.get("source") if isinstance(m.get("source"), dict) else {}
    variant = source.get("variant") if source.get("kind") == "hub" else None
    folder = f"fineweb10B_{variant}" if variant else m["name"]
    return {"folder": folder, "tokenizer": Path(m["tokenizer_path"]).name, **({"variant": variant} if variant else {})}


def upstream_data_env(data_manifest: str | os.PathLike) -> dict[str, str]:
    """The script's data variables (``stages.data_env``, after checking the folder against its manifest) with the
    paths of upstream's layout, relative to a record folder in the clone: ``../../../data/datasets/<folder>/<file
    pattern>`` and ``../../../data/tokenizers/<file>``."""
    data = data_env(data_manifest)
    layout = upstream_layout(data_manifest)
    root = "/".join([".."] * RECORD_DEPTH)
    for key in ("TRAIN_FILES", "VAL_FILES", "VAL_BYTES_FILES"):
        if data.get(key):
            data[key] = f"{root}/{UPSTREAM_DATASETS}/{layout['folder']}/{Path(data[key]).name}"
    data["TOKENIZER_PATH"] = f"{root}/{UPSTREAM_TOKENIZERS}/{layout['tokenizer']}"
    return data


def reproduce_env(
    hparams: dict,
    data_manifest: str | os.PathLike | None = None,
    quantize: dict | None = None,
    evaluate: dict | None = None,
) -> dict[str, str]:
    """Every setting of the challenge's single run (train, export, reload, score) that the pipeline gave the script:
    the training hyperparameters, the data and tokenizer paths of ``data_manifest`` in upstream's layout, relative to
    the record folder inside an upstream clone (``upstream_data_env``), and the quantize and eval sections as the
    script's variables. Raises ValueError when two sections set one variable to different values (one command could
    not reproduce both)."""
    env = {k: _env_value(v) for k, v in hparams.items()}
    parts = []
    if data_manifest is not None:
        parts.append(("data manifest", upstream_data_env(data_manifest)))
    if quantize:
        parts.append(("quantize", section_env(quantize, QUANTIZE_ENV, "quantize")))
    if evaluate:
        section = {k: v for k, v in evaluate.items() if k != "time_budget_s"}  # the pipeline's check, not the script's
        parts.append(("eval", section_env(section, EVAL_ENV, "eval")))
    for what, extra in parts:
        for key, value in extra.items():
            if key in env and env[key] != value:
                raise ValueError(
                    f"{what} sets {key}={value} but the training settings set {key}={env[key]}: one reproducing"
                    " command cannot give both"
                )
            env[key] = value
    return env


def _data_setup(data: dict | None, hparams: dict) -> list[str]:
    """README lines: where the reproducing command expects the data (upstream's layout) and how to get it there."""
    if not data or "TOKENIZER_PATH" not in hparams:
        return []
    folder = f"fineweb10B_{data['variant']}" if data.get("source") == "hub" and data.get("variant") else data["name"]
    where = (
        f"the data where upstream's `data/cached_challenge_fineweb.py` writes it: `{UPSTREAM_DATASETS}/{folder}/`"
        f" (shards) and `{UPSTREAM_TOKENIZERS}/{data['tokenizer']}`"
    )
    # upstream's download script serves its default repo and, with MATCHED_FINEWEB_REPO_ID, the larger vocabularies'
    repos = {
        "willdepueoai/parameter-golf": "",
        "kevclark/parameter-golf": "MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf ",
    }
    if data.get("source") == "hub" and data.get("repo_id") in repos:
        get = (
            f"; from the clone's root, `{repos[data['repo_id']]}python3 data/cached_challenge_fineweb.py"
            f" --variant {data['variant']} --train-shards {data['train_shards']}` fetches it"
        )
    elif data.get("source") == "hub":
        get = f" (from the Hugging Face dataset `{data['repo_id']}`: Data above)"
    else:
        get = (
            f"; this data set was built from documents (Data above): put its shards in"
            f" `{UPSTREAM_DATASETS}/{folder}/` and its tokenizer in `{UPSTREAM_TOKENIZERS}/`"
        )
    return [
        f"Copy this folder to `records/<track>/` of a clone of openai/parameter-golf, with {where}{get}. Then, from"
        " inside this folder (the data and tokenizer paths are relative to it):",
    ]


def _backends_by_seed(sub: dict) -> str | None:
    """The seeds' attention backends when they differ (e.g. FA3 on some, the SDPA fallback on others)."""
    pairs = [(seed, r.get("attention_backend")) for seed, r in sub["seed_results"].items()]
    return ", ".join(f"seed {seed}: {b}" for seed, b in pairs) if any(b for _, b in pairs) else None


def _fa3_step(status: dict | None) -> str | None:
    if not status or not status.get("state"):
        return None
    if status.get("reason"):
        fallback = f"; fallback {status['fallback']}" if status.get("fallback") else ""
        return f"{status['state']} ({status['reason']}{fallback})"
    return status["state"]


PHASE_ROWS = (
    ("train_loop_s", "training loop (timed by the script)"),
    ("calibration_s", "post-loop calibration on training data (GPTQ Hessians; training time under the rules)"),
    ("compression_s", "compression (as logged)"),
    ("decompression_s", "decompression (roundtrips)"),
    ("eval_s", "evaluation without TTT"),
    ("ttt_compile_s", "TTT compile warm-up"),
    ("ngram_precompute_s", "n-gram hints precompute"),
    ("ttt_eval_s", "evaluation with TTT"),
    ("total_eval_s", "total_eval_time (the script's eval budget figure)"),
)


def _phases_section(seeds: list[dict]) -> list[str]:
    """Where an upstream script's run spent its time, per seed, from its own log lines (metrics.json ``phases``)."""
    with_phases = [s for s in seeds if s["metrics"].get("phases")]
    if not with_phases:
        return []
    out = [
        "## Where the time went",
        "",
        "Seconds per phase, from the script's own log lines (`-`: not logged).",
        "",
        "| Phase | " + " | ".join(f"seed {s['seed']}" for s in with_phases) + " |",
        "|---|" + "---:|" * len(with_phases),
    ]
    for key, label in PHASE_ROWS:
        cells = [s["metrics"]["phases"].get(key) for s in with_phases]
        if any(c is not None for c in cells):
            out.append(f"| {label} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |")
    return [*out, ""]


def _readme(
    sub: dict,
    settings: dict,
    environment: dict,
    seeds: list[dict],
    hparams: dict,
    nproc: int,
    comparison: dict | None,
    extra_names: list[str],
    human: bool = False,
) -> str:
    """README.md text; every number comes from the metrics, settings, environment or hyperparameters."""
    n = len(seeds)
    out = [f"# {md_text(sub['name'] or 'Parameter Golf run')}", ""]
    if is_non_record(settings):
        out += [
            "> **Not a leaderboard record.** This is a non-record / demo run"
            f" (track `{sub['track']}`, hardware: {sub['hardware']}). Its numbers are not comparable with the"
            " 10-minute 8xH100 leaderboard and it must not be submitted as a record.",
            "",
        ]
    sliding = all(s["metrics"].get("sliding_val_bpb") is not None for s in seeds)
    stride = sub.get("eval_stride")
    score_kind = (
        f"sliding window, stride {stride}" if sliding and stride else ("sliding window" if sliding else "roundtrip")
    )
    if sub.get("ttt"):  # the score is the score-first TTT pass's: say so, with its settings
        score_kind += (
            ", with legal score-first test-time training ("
            + ", ".join(f"{k}={v}" for k, v in sorted(sub["ttt"].items()))
            + ": each chunk scored before any update on it)"
        )
    std_txt = f" ± {sub['val_bpb_std']:.8f} (sample std)" if sub["val_bpb_std"] is not None else " (one seed: no std)"
    out += [
        f"**val_bpb = {sub['val_bpb']:.8f}**{std_txt}, mean of {n} seed(s), {score_kind}, after the"
        f" {sub.get('quant_tag') or 'compressed'} roundtrip | **{sub['bytes_total']:,} bytes** (largest total over"
        f" seeds) | {sub['hardware']}",
        "",
    ]
    if sub.get("blurb"):
        out += [md_text(sub["blurb"]), ""]
    out += [
        f"- Author: {md_text(sub['author'])}" + (f" (@{md_text(sub['github_id'])})" if sub.get("github_id") else ""),
        f"- Date: {md_text(sub['date'])}",
        f"- Track: `{sub['track']}`",
        "",
        "## Results",
        "",
        "| Seed | " + " | ".join(h for h, _, _ in SEED_COLUMNS) + " |",
        "|---:|" + "---:|" * len(SEED_COLUMNS),
    ]
    out += ["| " + " | ".join(row) + " |" for row in _seed_rows(seeds)]
    loss_std = f" ± {sub['val_loss_std']:.8f}" if sub["val_loss_std"] is not None else ""
    out += [
        "",
        f"Mean over {n} seed(s): val_bpb {sub['val_bpb']:.8f}{std_txt}; val_loss {sub['val_loss']:.8f}{loss_std}"
        + (f"; pre-quant val_bpb {sub['pre_quant_val_bpb']:.8f}" if sub["pre_quant_val_bpb"] is not None else "")
        + ".",
        f"Code: {_cell(sub['bytes_code'], ',')} bytes. The score is val_bpb of the model reloaded from the compressed"
        " artifact; the logs `train_seed<N>.log` hold the exact figures.",
        "",
        "## Loss curves",
        "",
        f"![train_loss at every logged step and validation val_loss points, per seed, from the logs]({PLOT_NAME})",
        "",
    ]
    out += _phases_section(seeds)
    if comparison is not None:
        b = comparison["b"]
        out += [
            "## Comparison",
            "",
            f"Against `{b['dir']}` ({b['name']}, {b['n']} seed(s), mean val_bpb {b['mean_bpb']:.8f}):",
            "",
            "```",
            format_comparison(comparison),
            "```",
            "",
        ]
        out += _reproduction_table(comparison)
    out += ["## Hyperparameters", ""]
    if hparams:
        out += ["| Variable | Value |", "|---|---|"]
        out += [f"| {md_code(k)} | {md_code(_env_value(v))} |" for k, v in sorted(hparams.items())]
    else:
        out.append("The script's defaults (no overrides).")
    out += ["", *data_section(sub.get("data")), "## Hardware and versions", ""]
    env_rows = [
        ("Hardware", sub["hardware"]),
        ("GPU", environment.get("gpu")),
        ("GPU count", environment.get("gpu_count")),
        ("Processes per node", nproc),
        ("Driver", environment.get("driver")),
        ("Python", environment.get("python")),
        ("PyTorch", environment.get("torch")),
        ("CUDA", environment.get("cuda")),
        ("FlashAttention 3", environment.get("fa3")),
        ("Attention backend", sub.get("attention_backend") or _backends_by_seed(sub)),
        ("FA3 step", _fa3_step(environment.get("fa3_status"))),
        ("Platform", environment.get("platform")),
        ("Git commit", environment.get("git_commit")),
        ("Container image", environment.get("image_digest")),
        ("Image base", environment.get("image_base")),
    ]
    out += [f"- {label}: {value}" for label, value in env_rows if value is not None]
    if environment.get("nvidia_smi"):
        out += [
            "",
            "<details><summary>nvidia-smi</summary>",
            "",
            "```",
            environment["nvidia_smi"].rstrip(),
            "```",
            "",
            "</details>",
        ]
    seeds_txt = ", ".join(str(s["seed"]) for s in seeds)
    out += [
        "",
        "## Reproducing",
        "",
        *(_data_setup(sub.get("data"), hparams) or ["From inside this folder:"]),
        "",
        "```bash",
        "pip install -r requirements.txt",
        reproduce_command(hparams, nproc, seeds[0]["seed"]),
        "```",
        "",
        f"Run it once per seed, with `SEED` set to each of: {seeds_txt}. It trains, writes the artifact"
        " `final_model.ptz`, reloads it from disk and scores it, as the challenge runs the script; every setting that"
        " differs from the script's defaults is set above (training, data and tokenizer paths, quantization,"
        " evaluation). The pipeline ran the same script one stage at a time (train, quantize, evaluate) with these"
        " settings, which gives the same artifact and score"
        + (
            "; training stops on the wall clock (`MAX_WALLCLOCK_SECONDS`), so the steps reached, and the numbers"
            " after them, depend on the hardware's speed."
            if float(hparams.get("MAX_WALLCLOCK_SECONDS") or 0) > 0
            else "."
        ),
        "",
        "## Files",
        "",
        (
            f"- `train_gpt.py`: the training, quantization and evaluation script, packed (minified and compressed,"
            f" self-extracting): its {_cell(sub['bytes_code'], ',')} bytes are the code bytes counted"
            f"\n- `{HUMAN_NAME}`: its readable source (with docstrings and comments), not counted and not needed to"
            " run: `train_gpt.py` is this file without docstrings and comments, as `pgolf pack` writes it, and runs"
            " the same (same losses, same artifact); the pipeline ran this source, one stage at a time"
            if human
            else "- `train_gpt.py`: the training, quantization and evaluation script, exactly as run"
        ),
        "- "
        + ", ".join(f"`train_seed{s['seed']}.log`" for s in seeds)
        + (
            ": each seed's log, the script's output as written"
            if all(s["metrics"].get("logs") for s in seeds)
            else ": each seed's train, quantize and eval logs, concatenated as written"
        ),
        "- `submission.json`: leaderboard metadata",
        "- `requirements.txt`: Python requirements",
        f"- `{PLOT_NAME}`: the loss curves above",
    ]
    out += [f"- `{name}`: a file the script needs" for name in extra_names]
    out.append("")
    return "\n".join(out)


def _reproduction_table(comparison: dict) -> list[str]:
    """README lines comparing each seed with the reference's same seed, when the two share seeds."""
    ours, theirs = comparison["a"]["seeds"], {str(k): v for k, v in comparison["b"]["seeds"].items()}
    shared = [seed for seed in ours if str(seed) in theirs]
    if not shared:
        return []
    out = [
        "Seed by seed against the reference's own logs (a reproduction shows differences near zero):",
        "",
        "| Seed | This run val_bpb | Reference val_bpb | Difference (bpb) |",
        "|---:|---:|---:|---:|",
    ]
    for seed in shared:
        a, b = ours[seed]["val_bpb"], theirs[str(seed)]["val_bpb"]
        out.append(f"| {seed} | {a:.8f} | {b:.8f} | {a - b:+.8f} |")
    return out + [""]
