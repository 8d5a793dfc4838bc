"""Checks that run when the workflow is parsed, before any job: a config that cannot work is refused at once, naming
the file or key, instead of failing minutes into a rented pod (or, worse, reporting "Nothing to be done").

- ``yaml_problem``: a YAML syntax error with its file, line and column (Snakemake's own message names neither);
- ``profile_overlays``: the config files a Snakemake profile names that a ``--configfile`` on the command line
  replaced (Snakemake's rule: a command-line option replaces the profile's), so the Snakefile can load them underneath;
- ``config_problems``: paths that do not exist and model shapes the training script would refuse, for the keys of
  the config merged with the script's own defaults (read from its source, without importing torch).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml


def yaml_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` parses as YAML, else "path:line:column: what"."""
    try:
        with open(path, encoding="utf-8") as f:
            yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        return f"{where}: YAML syntax error: {e.problem or e.context}"
    except yaml.YAMLError as e:
        return f"{path}: YAML syntax error: {e}"
    return None


def _option_values(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """The values of a command-line option given as ``--opt V [V ...]`` or ``--opt=V``."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                out.append(value)
            else:
                j = i + 1
                while j < len(argv) and not argv[j].startswith("-"):
                    out.append(argv[j])
                    j += 1
                i = j - 1
        i += 1
    return out


def _profile_file(profile: str, bases: list[Path]) -> tuple[Path, Path] | None:
    """(the folder a relative profile was found from, its settings file)."""
    for base in bases:
        path = base / profile
        if path.is_file():
            return base, path
        for name in ("config.v9+.yaml", "config.v8+.yaml", "config.yaml", "profile.yaml"):
            if (path / name).is_file():
                return base, path / name
    return None


def profile_overlays(argv: list[str], environ: dict, given: list[str], bases: list[str]) -> list[tuple[str, str]]:
    """[(profile, config file)] for each config file that a profile on the command line (``--profile``, or
    ``$SNAKEMAKE_PROFILE``) names and that the config files in effect (``given``: Snakemake's, absolute, after the
    command line replaced the profile's) do not include. A relative profile, and the paths in it, are looked up from
    the first of ``bases`` that has it (Snakemake's working folder may have moved to ``--directory`` by now)."""
    profiles = _option_values(argv, ("--profile",))
    if not profiles and environ.get("SNAKEMAKE_PROFILE"):
        profiles = [environ["SNAKEMAKE_PROFILE"]]
    have = {os.path.realpath(p) for p in given}
    missing = []
    for profile in profiles:
        found = _profile_file(profile, [Path(b) for b in bases])
        if found is None:
            continue
        base, file = found
        settings = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        wanted = settings.get("configfile") or settings.get("configfiles") or []
        for path in [wanted] if isinstance(wanted, str) else wanted:
            full = Path(path) if Path(path).is_absolute() else base / path
            if os.path.realpath(full) not in have:
                missing.append((profile, str(full)))
    return missing


def dry_run_requested(argv: list[str]) -> bool:
    """Whether this command line asks Snakemake for a dry run (``-n``, ``--dry-run``, ``--dryrun``, ``-np``...)."""
    return any(a in ("--dry-run", "--dryrun") or re.fullmatch(r"-[a-zA-Z]*n[a-zA-Z]*", a) for a in argv[1:])


def executor_of(argv: list[str], environ: dict, bases: list[str]) -> str:
    """The Snakemake executor of this command line (``--executor``/``-e``, else the ``executor`` of the profile it
    names, else "local"): the Snakefile is read before Snakemake sets up its executor."""
    given = _option_values(argv, ("--executor", "-e"))
    if given:
        return given[-1]
    profiles = _option_values(argv, ("--profile",))
    if not profiles and environ.get("SNAKEMAKE_PROFILE"):
        profiles = [environ["SNAKEMAKE_PROFILE"]]
    for profile in reversed(profiles):
        found = _profile_file(profile, [Path(b) for b in bases])
        if found is not None:
            settings = yaml.safe_load(found[1].read_text(encoding="utf-8")) or {}
            if settings.get("executor"):
                return str(settings["executor"])
    return "local"


def script_defaults(script: str | os.PathLike) -> dict:
    """The defaults of the training script's knobs, read from its ``Hyperparameters`` class (``name: T = knob(D, ...)``
    or ``name = _env("NAME", D)``) without running it; {} for a script that has no such class."""
    try:
        tree = ast.parse(Path(script).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Hyperparameters":
            for stmt in node.body:
                target = value = None
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    target, value = stmt.target.id, stmt.value
                elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    target, value = stmt.targets[0].id, stmt.value
                if target is None or not isinstance(value, ast.Call) or not value.args:
                    continue
                arg = value.args[-1] if getattr(value.func, "id", "") == "_env" else value.args[0]
                try:
                    out[target] = ast.literal_eval(arg)
                except ValueError:
                    continue
    return out


def model_problems(train: dict, defaults: dict, nproc: int) -> list[str]:
    """Shapes the script would refuse (or crash on) at start-up, named by their config keys."""
    v = {**defaults, **{k: val for k, val in train.items() if not isinstance(val, dict)}}
    out = []

    def get(key):
        value = v.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    dim, heads, kv = get("model_dim"), get("num_heads"), get("num_kv_heads")
    if dim and heads and dim % heads:
        out.append(f"train.model_dim={dim} is not a multiple of train.num_heads={heads}")
    if heads and kv and heads % kv:
        out.append(f"train.num_heads={heads} is not a multiple of train.num_kv_heads={kv}")
    if dim and heads and not dim % heads:
        head_dim, rope = dim // heads, get("rope_dims")
        if head_dim % 2:
            out.append(f"train.model_dim/num_heads = {head_dim}: the head dimension must be even (RoPE)")
        if rope is not None and (rope % 2 or rope > head_dim):
            out.append(f"train.rope_dims={rope}: must be even and at most the head dimension {head_dim}")
    layers, xsa = get("num_layers"), get("xsa_last_n")
    if layers is not None and xsa is not None and xsa > layers:
        out.append(f"train.xsa_last_n={xsa} is more than train.num_layers={layers}")
    tokens, seq, accum = get("train_batch_tokens"), get("train_seq_len"), get("grad_accum_steps")
    if tokens and seq and accum is not None and nproc:
        steps = accum or max(1, 8 // nproc)
        if tokens % (nproc * steps) or (tokens // (nproc * steps)) % seq:
            out.append(
                f"train.train_batch_tokens={tokens} does not split into nproc_per_node({nproc}) x grad_accum_steps"
                f"({steps}) micro-batches of whole train.train_seq_len={seq} sequences"
            )
    return out


def path_problems(config: dict, resolve) -> list[str]:
    """Input files the config names that do not exist (``resolve`` maps a config path to the one the rules use)."""
    out = []
    data = config.get("data") or {}
    if data.get("source") == "documents":
        path = (data.get("documents") or {}).get("path")
        if path and not os.path.exists(resolve(path)):
            out.append(f"config data.documents.path: {path} not found (looked for {resolve(path)})")
    if data.get("source") == "local":
        path = (data.get("local") or {}).get("path")
        if path and not os.path.isfile(os.path.join(resolve(path), "manifest.json")):
            out.append(f"config data.local.path: {path} holds no manifest.json (looked in {resolve(path)})")
    record = config.get("record") or {}
    for i, path in enumerate(record.get("extra_files") or []):
        if not os.path.exists(resolve(path)):
            out.append(f"config record.extra_files[{i}]: {path} not found (looked for {resolve(path)})")
    ref = record.get("reference")
    if ref and not os.path.isdir(resolve(ref)):
        out.append(f"config record.reference: {ref} is not a folder (looked for {resolve(ref)})")
    return out


# --- the pod/SLURM preflight: the machine against the config, before any download or job (issue 26) -------------------

# A full challenge shard: a 1024-byte header and 100M uint16 tokens (a variant's validation split is at most that).
SHARD_BYTES = 1024 + 2 * 100_000_000
# What a run needs on disk beyond the data: the FA3 build's sources and objects, compile caches, checkpoints and
# artifacts of 3 seeds, logs (measured on one H200: about 2 GB; doubled).
RUN_HEADROOM_BYTES = 4 * 1024**3
FA3_IMPORT_RE = re.compile(r"^(?:from|import)\s+flash_attn_interface\b", re.MULTILINE)
# System programs that upstream record scripts run, and the environment variable (with the values) that makes them do
# it when the script reads one: the 2026-05 frontier (PR #2135) runs lrzip for COMPRESSOR=pergroup and gcc (its
# online_ngram_state.c) for NGRAM_TILT_ENABLED=1; a script that calls the tool and reads no such variable needs it.
TOOL_GATES = {"lrzip": ("COMPRESSOR", {"pergroup"}), "gcc": ("NGRAM_TILT_ENABLED", {"1", "true", "True"})}
TOOL_INSTALL = {"lrzip": "apt-get install -y lrzip", "gcc": "apt-get install -y gcc"}
RECORD_TRACK = "track_10min_16mb"
NON_RECORD_TRACK = "track_non_record_16mb"


def gpu_count(environ=None, runner=subprocess.run) -> int:
    """The CUDA GPUs this process may use: `nvidia-smi -L` (0 without it), narrowed by CUDA_VISIBLE_DEVICES when set
    (empty or -1: none)."""
    environ = os.environ if environ is None else environ
    try:
        proc = runner(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        listed = [line for line in proc.stdout.splitlines() if line.startswith("GPU ")] if proc.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        listed = []
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return len(listed)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if "-1" in ids:
        ids = ids[: ids.index("-1")]  # CUDA stops at the first invalid id
    return min(len(ids), len(listed))


def resolve_nproc(value, device: str, gpus: int | None) -> int:
    """config nproc_per_node: a number as given; "auto": the GPUs found here for device cuda (``gpus``; None on a
    cluster's submit host, where the jobs' nodes have the challenge's 8), 1 on a CPU."""
    if value != "auto":
        return int(value)
    if device != "cuda":
        return 1
    return 8 if gpus is None else max(1, min(gpus, 8))


def gpu_problems(nproc: int, gpus: int) -> list[str]:
    """No CUDA GPU, or fewer than nproc_per_node."""
    if gpus == 0:
        return [
            "no CUDA GPU here (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides them): config device: cuda trains "
            "on GPUs; run on a GPU machine (the pod), or use the CPU demo: snakemake --profile profiles/demo"
        ]
    if nproc > gpus:
        return [
            f"config nproc_per_node: {nproc} but this machine has {gpus} CUDA GPU(s): give nproc_per_node: auto (the "
            f"machine's count) or at most {gpus} (e.g. --config nproc_per_node={gpus})"
        ]
    return []


def hub_fetch_bytes(data: dict, out_dir: str | os.PathLike) -> tuple[int, str]:
    """(bytes the hub data step will still fetch into ``out_dir``, how that was counted): the variant's train shards
    plus one validation shard, each a full challenge shard at most, less the shard files already there."""
    hub = data.get("hub") or {}
    variant = hub.get("variant")
    repo = (hub.get("repos") or {}).get(variant) or {}
    shards = int(hub.get("train_shards") or repo.get("train_shards") or 0)
    want = {f"fineweb_train_{i:06d}.bin" for i in range(shards)} | {"fineweb_val_000000.bin"}
    have = 0
    for name in want:
        path = Path(out_dir, name)
        if path.is_file():
            have += min(path.stat().st_size, SHARD_BYTES)
    need = max(0, len(want) * SHARD_BYTES - have)
    return need, f"{shards} train shards + the val shard of {variant}, about {SHARD_BYTES / 1e6:.0f} MB each"


def disk_problems(config: dict, workdir: str | os.PathLike, free_bytes: int | None = None) -> list[str]:
    """Free disk at the working folder against what the data step will fetch and what the run writes."""
    data = config.get("data") or {}
    need, how = (0, "") if data.get("source") != "hub" else hub_fetch_bytes(data, Path(workdir, "data", data["name"]))
    if free_bytes is None:
        free_bytes = shutil.disk_usage(workdir).free
    total = need + RUN_HEADROOM_BYTES
    if free_bytes >= total:
        return []
    gib = 1024**3
    what = f"the data step will fetch about {need / gib:.1f} GiB ({how}) and " if need else ""
    return [
        f"free disk: {free_bytes / gib:.1f} GiB at {Path(workdir).resolve()}, but {what}the run needs about "
        f"{RUN_HEADROOM_BYTES / gib:.0f} GiB more (FA3 build, compile caches, checkpoints): free space, give the pod a "
        f"larger disk or volume, or fetch fewer shards (config data.hub.train_shards)"
    ]


def script_folder_sources(script: str | os.PathLike) -> dict[Path, str]:
    """The training script and the other .py files of its folder (helpers it imports), by path."""
    script = Path(script).resolve()
    files = [script, *sorted(p for p in script.parent.glob("*.py") if p.resolve() != script)]
    return {p: p.read_text(encoding="utf-8", errors="replace") for p in files if p.is_file()}


def fa3_problems(config: dict, script: str | os.PathLike, importable: bool, nvcc: bool) -> list[str]:
    """An upstream script that imports flash_attn_interface at module level when the fa3 step will not provide it;
    an FA3 build that is required (fa3.required) without a CUDA compiler."""
    train = config.get("train") or {}
    fa3 = config.get("fa3") or {}
    building = fa3.get("enabled", True) and fa3.get("source") == "build" and not importable
    if building and fa3.get("required") and not nvcc:
        return [
            "config fa3.required is true and fa3.source is build, but there is no CUDA compiler (nvcc) on PATH: put "
            "the CUDA toolkit's bin on PATH (export PATH=/usr/local/cuda/bin:$PATH), or set fa3.source: wheel"
        ]
    if train.get("mode", "staged") != "upstream" or importable or not os.path.exists(script):
        return []
    users = [p for p, text in script_folder_sources(script).items() if FA3_IMPORT_RE.search(text)]
    if not users:
        return []
    who = f"train.script {users[0].name} imports flash_attn_interface (FlashAttention 3), which is not installed"
    if not fa3.get("enabled", True):
        return [f"{who} and config fa3.enabled is false: set fa3.enabled: true (the fa3 step installs or builds it)"]
    if fa3.get("source", "wheel") == "build" and not nvcc:
        return [
            f"{who}, config fa3.source is build and there is no CUDA compiler (nvcc) on PATH: put the CUDA toolkit's "
            "bin on PATH, or set fa3.source: wheel (the pinned prebuilt wheel)"
        ]
    return []


def _env_default(texts, var: str) -> str | None:
    """The default a script gives ``var`` (``os.environ.get("VAR", "d")`` / ``os.getenv``), None when it reads none."""
    pattern = re.compile(rf"""(?:environ\.get|getenv)\(\s*["']{re.escape(var)}["']\s*(?:,\s*["']?([^"')]*)["']?)?\)""")
    for text in texts:
        m = pattern.search(text)
        if m:
            return m.group(1) or ""
    return None


def tool_problems(config: dict, script: str | os.PathLike, which=shutil.which) -> list[str]:
    """System programs an upstream script runs (lrzip, gcc) that are not on PATH, when the config's train.env (or the
    script's default) makes it run them."""
    train = config.get("train") or {}
    if train.get("mode", "staged") != "upstream" or not os.path.exists(script):
        return []
    texts = list(script_folder_sources(script).values())
    env = {k: str(v) for k, v in (train.get("env") or {}).items()}
    out = []
    for tool, (var, values) in TOOL_GATES.items():
        called = re.compile(rf"""["']{re.escape(tool)}["']\s*,""")
        if not any(called.search(t) for t in texts) or which(tool):
            continue
        default = _env_default(texts, var)
        value = env.get(var, default)
        if default is not None and value not in values:
            continue
        why = f"with {var}={value}" if default is not None else "(it calls it)"
        out.append(
            f"train.script's folder runs `{tool}` {why}, and {tool} is not on PATH: {TOOL_INSTALL[tool]}"
            + (f" (or set train.env.{var} to another value)" if default is not None else "")
        )
    return out


def record_problems(record: dict) -> list[str]:
    """A record attempt needs its author and GitHub id, and the track must agree with record.non_record."""
    track, non_record = record.get("track"), bool(record.get("non_record"))
    out = []
    if track == RECORD_TRACK and non_record:
        out.append(
            f"config record.track is {RECORD_TRACK} but record.non_record is true: set record.track: "
            f"{NON_RECORD_TRACK} for a non-record run, or record.non_record: false for a record attempt"
        )
    if track == NON_RECORD_TRACK and not non_record:
        out.append(
            f"config record.track is {NON_RECORD_TRACK} but record.non_record is false: set record.non_record: true, "
            f"or record.track: {RECORD_TRACK} for a record attempt"
        )
    if track == RECORD_TRACK and not non_record:
        for key in ("author", "github_id"):
            if not str(record.get(key) or "").strip():
                out.append(
                    f"config record.{key} is empty: a record attempt ({RECORD_TRACK}) is submitted under your name and "
                    f"GitHub id: set record.{key} in config/config.yaml or in the file you pass with --configfile "
                    f"(record: {{author: Your Name, github_id: your-github-id}})"
                )
    return out


def machine_problems(
    config: dict,
    script: str | os.PathLike,
    workdir: str | os.PathLike,
    gpus: int | None,
    nproc: int,
    importable_fa3: bool | None = None,
    nvcc: bool | None = None,
) -> list[str]:
    """Every pod/SLURM preflight check: GPUs (``gpus``: None where the jobs run elsewhere, a cluster), disk, FA3 and
    system tools for an upstream script, and the record's identity."""
    import importlib.util

    if importable_fa3 is None:
        importable_fa3 = importlib.util.find_spec("flash_attn_interface") is not None
    if nvcc is None:
        nvcc = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
    out = [] if gpus is None else gpu_problems(nproc, gpus)
    out += disk_problems(config, workdir)
    out += fa3_problems(config, script, importable_fa3, nvcc)
    out += tool_problems(config, script)
    out += record_problems(config.get("record") or {})
    return out


# the folders the pipeline reads and writes, which a pod often links to a network volume
LINKED_FOLDERS = ("data", "results", "records", "logs", ".cache")


def link_problems(root: str | os.PathLike) -> list[str]:
    """A working folder (``data/``, ``results/``, ...) that is a link to nothing: the volume it points to is not
    mounted (a new pod, a cluster node without the file system). Without this, the plan re-makes every product (and
    re-trains every seed) or fails creating the folder with no word on why."""
    out = []
    for name in LINKED_FOLDERS:
        path = Path(root, name)
        if path.is_symlink() and not path.exists():
            out.append(
                f"{name}/ is a link to {os.readlink(path)}, which does not exist (a volume not mounted?): mount it,"
                f" or remove the link {path} to start afresh"
            )
        elif path.exists() and not path.is_dir():
            out.append(f"{name}: {path} is not a folder (the pipeline writes its products under {name}/)")
    return out


def input_problems(config: dict, resolve) -> list[str]:
    """Input paths that exist but are not files (a folder given for a file)."""
    out = []
    script = (config.get("train") or {}).get("script")
    if script and os.path.isdir(resolve(script)):
        out.append(f"config train.script: {script} is a folder; expected the training script (a .py file)")
    data = config.get("data") or {}
    path = (data.get("documents") or {}).get("path") if data.get("source") == "documents" else None
    if path and os.path.isdir(resolve(path)):
        out.append(f"config data.documents.path: {path} is a folder; expected a JSON-lines file (.jsonl, .xz, .gz)")
    return out


def date_problem(date) -> str | None:
    """``record.date`` must be a calendar date written YYYY-MM-DD (2026-13-45 is not one); null is today."""
    import datetime

    if date is None:
        return None
    try:
        ok = isinstance(date, str) and datetime.date.fromisoformat(date).isoformat() == date
    except ValueError:
        ok = False
    return None if ok else f"record.date: {date!r} is not a date (expected YYYY-MM-DD, e.g. 2026-04-30)"


def record_folder_problems(record: dict, record_dir: str | os.PathLike, run: str) -> list[str]:
    """The record section against the record folder it names: a real date, and a folder that no other run wrote (two
    runs with one ``record.name`` would overwrite each other's record, back and forth)."""
    out = [p for p in [date_problem(record.get("date"))] if p]
    try:
        owner = json.loads(Path(record_dir, "submission.json").read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        owner = None
    if isinstance(owner, str) and owner != run:
        out.append(
            f"record.name: {record_dir} is the record of run {owner!r}, not of this run {run!r}: give this run"
            f" another record.name, or remove {record_dir} to replace it"
        )
    return out


def eval_problems(config: dict, manifest: str | os.PathLike) -> list[str]:
    """An evaluation window longer than the validation split (the data set's manifest, when it exists, knows the
    split's size): refused before any job, not inside the evaluate step after training."""
    evaluation = config.get("eval") or {}
    seq = evaluation.get("eval_seq_len")
    if not isinstance(seq, int) or (config.get("train") or {}).get("mode", "staged") != "staged":
        return []
    try:
        m = json.loads(Path(manifest).read_text(encoding="utf-8"))
        tokens = sum(int(f["tokens"]) for f in m["val"]["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no data set yet: the evaluate step checks it
    limit = evaluation.get("val_tokens_limit") or 0
    targets = (min(limit, tokens) if limit > 0 else tokens) - 1
    if seq > targets:
        scope = f" (its first eval.val_tokens_limit={limit})" if 0 < limit < tokens else ""
        return [
            f"eval.eval_seq_len={seq} is longer than the validation split{scope}: {targets:,} target tokens in"
            f" {manifest}; lower eval.eval_seq_len"
        ]
    return []


def run_record_date(records: str | os.PathLike, track: str, name: str, run: str) -> str | None:
    """The date of the record folder that run ``run`` already wrote as ``<records>/<track>/<date>_<name>`` (its
    submission.json's ``run``), or None. With ``record.date: null`` (today), a run re-invoked after midnight (a pod
    session that spans two days, a failed step re-run the next morning) keeps its folder instead of writing a second
    one beside it: a pull request adds exactly one record folder."""
    dates = []
    for sub in sorted(Path(records, track).glob(f"*_{name}/submission.json")):
        date = sub.parent.name[: -len(name) - 1]
        try:
            owner = json.loads(sub.read_text(encoding="utf-8")).get("run")
        except (OSError, ValueError, AttributeError):
            continue
        if owner == run and date_problem(date) is None:
            dates.append(date)
    return dates[-1] if dates else None
