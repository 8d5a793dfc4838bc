"""What a record was trained on and with: the data set's provenance from its manifest (and the hub lock), and the
requirements pinned to the versions that ran. ``pgolf.record`` puts both in every record folder, so that a
reproduction audit (which repo, which revision, how many train shards, which tokenizer) is answerable from the folder
alone."""

from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pgolf.data import load_manifest, lock_key, read_lock

_SPECIFIER = re.compile(r"[=<>!~@;\[ ]")


def data_provenance(manifest_path: str | os.PathLike) -> dict:
    """The data set of a record: its name, source (hub: repo, revision as configured, the commit it resolved to,
    variant, remote root, the lock's sha256 of every file; documents: the file's name and sha256), the shard counts
    and tokens, the tokenizer's name, sha256 and vocabulary, and the byte sidecar's sha256 when there is one."""
    m = load_manifest(manifest_path)
    source = m.get("source") if isinstance(m.get("source"), dict) else {"kind": str(m.get("source"))}
    out: dict = {
        "name": m["name"],
        "source": source.get("kind"),
        "train_shards": len(m["train_files"]),
        "train_tokens": m["train_tokens"],
        "val_shards": len(m["val_files"]),
        "val_tokens": m["val_tokens"],
        "tokenizer": Path(m["tokenizer_path"]).name,
        "tokenizer_sha256": m["tokenizer"]["sha256"],
        "vocab_size": m["vocab_size"],
        "val_bytes_sidecar": [{"path": e["path"], "sha256": e["sha256"]} for e in m["val_bytes"]["files"]]
        if "val_bytes" in m
        else None,
    }
    if source.get("kind") == "hub":
        out.update({k: source.get(k) for k in ("repo_id", "revision", "commit", "variant", "remote_root")})
        key = lock_key(str(source.get("repo_id")), str(source.get("revision")), str(source.get("variant")))
        lock = source.get("lock")
        entry = read_lock(lock)["datasets"].get(key) if lock and Path(lock).is_file() else None
        out["lock_key"] = key
        # the lock's hashes (every file the data step fetched); without a lock, the manifest's
        out["files_sha256"] = dict(entry["files"]) if entry else _manifest_hashes(m)
    elif source.get("kind") == "documents":
        out["documents"] = Path(str(source["docs"])).name if source.get("docs") else None
        out["documents_sha256"] = source.get("docs_sha256")
        if source.get("prepare_script"):  # shards made by a record's own prepare script (pgolf.data.prepare)
            out["prepare_script"] = Path(str(source["prepare_script"])).name
            out.update({k: source.get(k) for k in ("prepare_script_sha256", "prepare_helpers_sha256", "train_docs")})
            out["val_docs"] = source.get("val_docs")
        out["files_sha256"] = _manifest_hashes(m)
    else:
        out["files_sha256"] = _manifest_hashes(m)
    return out


def _manifest_hashes(m: dict) -> dict[str, str]:
    hashes = {Path(m["tokenizer_path"]).name: m["tokenizer"]["sha256"]}
    for split in ("train", "val", "val_bytes"):
        hashes.update({e["path"]: e["sha256"] for e in (m.get(split) or {}).get("files", [])})
    return hashes


def data_fetch_command(data: dict) -> str | None:
    """The command that fetches the same data (hub sources), pinned to the commit the download resolved."""
    if data.get("source") != "hub":
        return None
    revision = data.get("commit") or data.get("revision")
    return (
        f"pgolf data hub --out data/{data['name']} --repo-id {data['repo_id']} --revision {revision}"
        f" --variant {data['variant']} --train-shards {data['train_shards']} --remote-root {data['remote_root']}"
    )


def data_section(data: dict | None) -> list[str]:
    """The README's ``## Data`` section (empty without provenance)."""
    if not data:
        return []
    out = ["## Data", ""]
    if data.get("source") == "hub":
        resolved = data.get("commit") or "not resolved"
        out.append(
            f"- Source: Hugging Face dataset `{data['repo_id']}`, revision `{data['revision']}` (commit `{resolved}`),"
            f" variant `{data['variant']}`, folder `{data['remote_root']}`"
        )
    elif data.get("source") == "documents":
        out.append(f"- Source: documents `{data['documents']}` (sha256 `{data['documents_sha256']}`)")
        if data.get("prepare_script"):
            out.append(
                f"- Shards made by the record's own `{data['prepare_script']}` (sha256"
                f" `{data['prepare_script_sha256']}`): the first {data['val_docs']} documents are validation,"
                f" {data['train_docs']} train; no document in both"
            )
    else:
        out.append(f"- Source: {data.get('source')}")
    out += [
        f"- Train shards: {data['train_shards']} ({data['train_tokens']:,} tokens); validation shards:"
        f" {data['val_shards']} ({data['val_tokens']:,} tokens)",
        f"- Tokenizer: `{data['tokenizer']}`, {data['vocab_size']} pieces, sha256 `{data['tokenizer_sha256']}`",
        "- val_bpb bytes: "
        + (
            "the validation byte sidecar "
            + ", ".join(f"`{e['path']}` ({e['sha256']})" for e in data["val_bytes_sidecar"])
            if data.get("val_bytes_sidecar")
            else "the tokenizer's pieces"
        ),
        "- The sha256 of every data file is in `submission.json` (`data.files_sha256`).",
    ]
    command = data_fetch_command(data)
    if command:
        out += ["", "```bash", command, "```"]
    return out + [""]


# PyTorch's own index of each build (the default index, PyPI, serves one build per version under the plain version)
TORCH_INDEX = "https://download.pytorch.org/whl/{build}"
# PyTorch's FA3 wheel for torch 2.9.1 + CUDA 12.8 (config.yaml's fa3.wheel; cp39-abi3)
FA3_CU128_WHEEL = "https://download.pytorch.org/whl/cu128/flash_attn_3-3.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"
_LOCAL = re.compile(r"^([^+\s]+)\+(\S+)$")
_FA3_IMPORT = re.compile(r"^\s*(?:from|import)\s+flash_attn_interface\b", re.MULTILINE)


def _public(name: str, found: str, environment: dict) -> tuple[str, str | None]:
    """``found`` without its local version label (``2.11.0+cu130`` -> ``2.11.0``: plain pip cannot resolve a local
    label), and the comment that names the build that ran."""
    m = _LOCAL.match(found)
    if name != "torch":
        return (m.group(1), f"ran: {found}") if m else (found, None)
    cuda = environment.get("cuda")
    if m:
        build = m.group(2)
        what = "the CPU build" if build == "cpu" else f"the CUDA {cuda} build" if cuda else f"the {build} build"
        return m.group(1), (
            f"ran: {found}, {what}; that exact build: pip install torch=={m.group(1)}"
            f" --index-url {TORCH_INDEX.format(build=build)}"
        )
    return found, (f"ran: {found}, the CUDA {cuda} build (the default index's wheel)" if cuda else None)


def install_notes(environment: dict, script_text: str = "") -> list[str]:
    """What plain pip cannot install, as the frontier records write it (comment lines): FlashAttention 3 when the run
    used it or the script imports it, and the lrzip binary when the script calls it."""
    notes: list[str] = []
    # the fa3 step's version of FA3 when it was available (used), else the package installed there
    fa3 = environment.get("fa3") or (environment.get("packages") or {}).get("flash_attn_3")
    if fa3 or _FA3_IMPORT.search(script_text):
        status = environment.get("fa3_status") or {}
        ran = f" (the run used flash_attn_3 {fa3})" if fa3 else ""
        notes += ["", f"# FlashAttention 3 must be installed separately (not on PyPI){ran}:"]
        if status.get("url"):
            notes.append(f"# pip install --no-deps {status['url']}")
        elif status.get("state") == "built" and status.get("commit"):
            repo = str(status.get("repo") or "")
            if not re.match(
                r"^[a-z][a-z0-9+.-]*://", repo
            ):  # a local clone or bundle: this machine's path helps no one
                repo = f"a local copy of flash-attention ({os.path.basename(repo.rstrip('/')) or 'a clone'})"
            notes.append(
                f"# built from {repo} hopper/ at commit {status['commit']}:"
                " cd hopper && pip install --no-build-isolation --no-deps ."
            )
        else:
            notes += [
                "# a wheel built for the torch/CUDA pair above (or build hopper/ of Dao-AILab/flash-attention);",
                "# for torch 2.9.1 + CUDA 12.8, PyTorch's:",
                f"# pip install --no-deps {FA3_CU128_WHEEL}",
            ]
        if not _FA3_IMPORT.search(script_text):
            notes.append("# (optional for this script: without it, it falls back to PyTorch SDPA, slower)")
    if "lrzip" in script_text:
        notes += ["", "# System dep (apt): lrzip (the script compresses with it)", "# apt-get install -y lrzip"]
    return notes


def pinned_requirements(requirements: list[str] | None, environment: dict, script_text: str = "") -> str:
    """requirements.txt text that plain ``pip install -r`` resolves: each name pinned to the version that ran
    (``environment``, the fa3 step's environment.json: ``torch`` and ``packages``; else the version installed here),
    without a local version label (``+cu130``, ``+cpu``: the build that ran is named in a comment, with the index that
    serves it). A requirement that already has a specifier is kept as written; one whose version is known nowhere
    stays unpinned, with a comment saying so. Then the install notes of what pip cannot install (``install_notes``)."""
    packages = {k.lower().replace("_", "-"): v for k, v in (environment.get("packages") or {}).items()}
    lines = ["# Python deps. Install with: pip install -r requirements.txt"]
    if environment.get("python"):  # the pins are that Python's (numpy 2.5 needs Python >= 3.12, for one)
        lines.append(f"# ran on Python {environment['python']}")
    for req in requirements or []:
        req = str(req).strip()
        if not req or _SPECIFIER.search(req):
            lines.append(req)
            continue
        key = req.lower().replace("_", "-")
        found = environment.get("torch") if key == "torch" else packages.get(key)
        if not found:
            try:
                found = version(req)
            except PackageNotFoundError:
                found = None
        if not found:
            lines.append(f"{req}  # version unknown: not installed where this was recorded")
            continue
        pin, comment = _public(key, str(found), environment)
        lines.append(f"{req}=={pin}" + (f"  # {comment}" if comment else ""))
    lines += install_notes(environment, script_text)
    return "".join(f"{line}\n" for line in lines)
