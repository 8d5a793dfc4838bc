"""The packed training script: smaller, and the same program (same losses, same artifact, its own bytes counted), with
Triton importable: its @triton.jit kernels read their source through inspect, which code exec'd from a string lacks."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import lzma
import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SCRIPT, SHARED, TINY_MODEL_ENV, run_script

from pgolf import pack
from pgolf.cli import main as pgolf

CORPUS = SHARED / "fixtures" / "upstream-corpus"
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (the test extra pins it on Linux)")

# A script with a Triton kernel that Triton's interpreter runs on CPU (TRITON_INTERPRET=1).
KERNEL_SCRIPT = '''\
"""A Triton kernel on CPU, through Triton's interpreter."""

import inspect
import linecache
import os

import torch
import triton
import triton.language as tl


@triton.jit
def add_scaled(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
    # out = x + scale * y, one block per program
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + scale * tl.load(y_ptr + offs, mask=mask), mask=mask)


def run():
    """Call the kernel; print its output and where its code lives."""
    x, y = torch.arange(10, dtype=torch.float32), torch.ones(10)
    out = torch.empty_like(x)
    add_scaled[(triton.cdiv(10, 4),)](x, y, out, 10, 0.5, BLOCK=4)
    rank = os.environ.get("RANK", "-")
    print(f"rank {rank} result {out.tolist()} file {add_scaled.fn.__code__.co_filename}", flush=True)
    linecache.clearcache()  # as Inductor's compile workers do: inspect then reads the real file
    assert "def add_scaled(" in inspect.getsource(add_scaled.fn)


if __name__ == "__main__":
    run()
'''
KERNEL_RESULT = "result [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5]"


def stage(script, stage_args, tiny_data, tmp_path, tag):
    run_script(
        [*stage_args, "--logfile", str(tmp_path / f"{tag}.log"), "--summary", str(tmp_path / f"{tag}.json")],
        {"SEED": "5"},
        tiny_data,
        tmp_path,
        script=script,
    )
    return (tmp_path / f"{tag}.log").read_text()


def unpacked_file(packed: bytes, name: str, tmpdir: str | None = None) -> Path:
    """Where a packed script (its bytes) writes the code it runs."""
    code = pack.unwrap(packed)
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    return Path(tmpdir or os.environ.get("TMPDIR") or "/tmp") / f"pgolf_{digest}" / name


def steps_of(log: str) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:\S+", log, re.M)


@pytest.mark.slow
def test_packed_script_is_small_and_runs_identically(tiny_data, tmp_path):
    """Our script, packed: at most 30,000 bytes, the same --help, the same losses, weights and artifact, its own
    bytes counted; with Triton installed its kernels import from the packed file."""
    packed = tmp_path / "ship" / "train_gpt.py"
    assert pgolf(["pack", "--script", str(SCRIPT), "--out", str(packed)]) == 0
    assert packed.stat().st_size <= 30_000, packed.stat().st_size
    data = packed.read_bytes()
    assert data.startswith(b"# coding: latin-1\n")  # the compressed bytes are a latin-1 string (PEP 263)
    assert pack.HUMAN_NAME in pack.decode_source(data).split('"""')[1]  # the docstring says where the source is
    helps = [subprocess.run([sys.executable, str(s), "--help"], capture_output=True, text=True, check=True).stdout
             for s in (SCRIPT, packed)]  # fmt: skip
    assert helps[0] == helps[1] and "Parameter Golf" in helps[1]  # the docstring's first line survives

    logs = {}
    for tag, script in (("orig", SCRIPT), ("packed", packed)):
        ckpt = tmp_path / f"{tag}.pt"
        logs[tag] = stage(script, ["--stage", "train", "--checkpoint", str(ckpt)], tiny_data, tmp_path, f"t_{tag}")
        qlog = stage(
            script,
            ["--stage", "quantize", "--checkpoint", str(ckpt), "--artifact", str(tmp_path / f"{tag}.ptz")],
            tiny_data,
            tmp_path,
            f"q_{tag}",
        )
        assert f"Code size: {script.stat().st_size} bytes" in qlog  # the file that ran is the one counted
    steps = {t: steps_of(log) for t, log in logs.items()}
    assert steps["orig"] and steps["orig"] == steps["packed"]
    a, b = (torch.load(tmp_path / f"{t}.pt", weights_only=True)["state_dict"] for t in ("orig", "packed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "orig.ptz").read_bytes() == (tmp_path / "packed.ptz").read_bytes()
    real = unpacked_file(data, "train_gpt.py")
    assert real.read_text() == pack.minify(SCRIPT.read_text())[0]  # the code that ran, as a real file


@pytest.mark.slow
@needs_triton
def test_cpu_path_is_the_same_without_triton(tiny_data, tmp_path):
    """Installing Triton must not change a CPU run: the fused kernels are for CUDA tensors only."""
    blocked = tmp_path / "no_triton.py"  # the script run with `import triton` failing, as on a CPU build of torch
    blocked.write_text(
        "import runpy, sys\nsys.modules['triton'] = None\n"
        f"sys.argv[0] = {str(SCRIPT)!r}\nrunpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    logs = {}
    for tag, script in (("with", SCRIPT), ("without", blocked)):
        args = ["--stage", "train", "--checkpoint", str(tmp_path / f"{tag}.pt")]
        logs[tag] = stage(script, args, tiny_data, tmp_path, tag)
    assert steps_of(logs["with"]) and steps_of(logs["with"]) == steps_of(logs["without"])
    a, b = (torch.load(tmp_path / f"{t}.pt", weights_only=True)["state_dict"] for t in ("with", "without"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@needs_triton
def test_packed_triton_kernel_runs_on_cpu_under_torchrun(tmp_path):
    """A packed file with a @triton.jit kernel imports and runs it (Triton's interpreter on CPU), on 2 ranks racing
    to write the same file, and inspect reads its source even after linecache is cleared."""
    src = tmp_path / "kernel.py"
    src.write_text(KERNEL_SCRIPT)
    packed = tmp_path / "packed" / "kernel.py"
    packed.parent.mkdir()
    packed.write_bytes(pack.pack(KERNEL_SCRIPT))
    unpacked = tmp_path / "unpacked"
    exec_from_string = subprocess.run(  # what the previous packer did: Triton refuses code it cannot read
        [sys.executable, "-c", f"exec(compile(open({str(src)!r}).read(), '<packed>', 'exec'))"],
        capture_output=True,
        text=True,
    )
    assert exec_from_string.returncode != 0 and "@jit functions should be defined in a Python file" in (
        exec_from_string.stderr
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "TMPDIR": str(unpacked), "OMP_NUM_THREADS": "1"}
    unpacked.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(packed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    real = unpacked_file(packed.read_bytes(), "kernel.py", str(unpacked))
    for rank in (0, 1):
        assert f"rank {rank} {KERNEL_RESULT} file {real}" in proc.stdout
    assert real.read_text() == pack.minify(KERNEL_SCRIPT)[0]
    assert sorted(p.name for p in real.parent.iterdir()) == ["kernel.py"]  # no temporary file left behind

    # Where the file cannot be written (here a file stands where its folder would be), linecache alone serves
    # inspect; a stale or foreign file is replaced (the code that runs is always the packed one)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / real.parent.name).write_text("not a folder")
    run = [sys.executable, "-c", f"import runpy; runpy.run_path({str(packed)!r}, run_name='m')['add_scaled']"]
    proc = subprocess.run(run, capture_output=True, text=True, env={**env, "TMPDIR": str(blocked)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    real.write_text("# someone else's file\n")
    proc = subprocess.run([sys.executable, str(packed)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and KERNEL_RESULT in proc.stdout, proc.stderr[-2000:]
    assert real.read_text() == pack.minify(KERNEL_SCRIPT)[0]


def test_packed_script_loads_as_a_module_with_its_kernels(tmp_path):
    """benchmarks/ and the tests import the script under a module name: the packed one too, kernels and all."""
    packed = tmp_path / "train_gpt.py"
    packed.write_bytes(pack.ship(SCRIPT.read_bytes())[0])
    spec = importlib.util.spec_from_file_location("train_gpt_packed_under_test", packed)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        assert mod.__file__ == str(packed) and mod.Hyperparameters.num_layers == 11
        if HAS_TRITON:
            assert mod.triton is not None
            kernel = mod.relu2_epilogue  # a plain @triton.jit function
            assert "def relu2_epilogue(" in kernel.src and kernel.fn.__module__ == spec.name
    finally:
        del sys.modules[spec.name]


def test_minify_drops_docstrings_and_comments_but_keeps_code():
    src = '"""Doc line.\n\nMore."""\n# comment\ndef f(x):\n    """doc"""\n    "a no-op string"\n'
    src += "    return x + 1  # trailing\n"
    code, doc = pack.minify(src)
    assert doc == "Doc line." and "comment" not in code and "doc" not in code and "no-op" not in code
    assert code == "def f(x):\n return x + 1\n"  # one space per indent level
    ns = {}
    exec(code, ns)
    assert ns["f"](1) == 2


def test_packing_twice_changes_nothing(tmp_path):
    once, twice = tmp_path / "once.py", tmp_path / "twice.py"
    assert pgolf(["pack", "--script", str(SCRIPT), "--out", str(once)]) == 0
    assert pgolf(["pack", "--script", str(once), "--out", str(twice)]) == 0
    assert twice.read_bytes() == once.read_bytes()
    assert pack.unwrap(once.read_bytes()) == pack.minify(SCRIPT.read_text())[0]


def upstream_wrapper(source: str, extra: str = "") -> str:
    """An upstream record's self-extracting form (raw LZMA2 in base85)."""
    raw = lzma.compress(source.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    blob = base64.b85encode(raw).decode()
    return (
        f"import lzma as L,base64 as B\n{extra}exec(L.decompress(B.b85decode({blob!r}),"
        "format=L.FORMAT_RAW,filters=[{'id':L.FILTER_LZMA2}]))\n"
    )


def test_wrapped_scripts_are_unwrapped_or_left_alone(tmp_path):
    source = SCRIPT.read_text()
    wrapped = upstream_wrapper(source)
    assert pack.unwrap(wrapped) == source
    out, how = pack.ship(wrapped)
    assert how == "packed" and len(out) < len(wrapped.encode())
    assert pack.unwrap(out) == pack.minify(source)[0]
    # the wrapped code reads a name the wrapper sets: unwrapping would break it, so the wrapper itself is what is
    # packed (lzma over base85 text still gains, now that the packed bytes are not base85 again)
    reads_it = upstream_wrapper(source + "\nprint(__wrapper_size__)\n", extra="__wrapper_size__=1\n")
    assert pack.unwrap(reads_it) is None
    out, how = pack.ship(reads_it)
    assert how == "packed" and len(out) < len(reads_it) and pack.unwrap(out) == pack.minify(reads_it)[0]
    launcher = "exec(open(__file__.replace('train_gpt.py','train_gpt_decode.py')).read())\n"
    assert pack.ship(launcher)[0] == launcher.encode()  # packing would make it larger
    # the earlier pgolf stub (code exec'd from a string) is unwrapped and repacked
    old = '"""Doc."""\nimport base64,lzma\nexec(compile(lzma.decompress(base64.b85decode("{}")),__file__,"exec"))\n'
    old = old.format(base64.b85encode(lzma.compress(pack.minify(source)[0].encode())).decode())
    assert pack.unwrap(old) == pack.minify(source)[0]


def test_pack_errors_name_the_file(tmp_path, capsys):
    assert pgolf(["pack", "--script", str(tmp_path / "missing.py"), "--out", str(tmp_path / "o.py")]) == 2
    assert "missing.py: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    assert pgolf(["pack", "--script", str(bad), "--out", str(tmp_path / "o.py")]) == 2
    assert f"{bad}: not valid Python" in capsys.readouterr().err
    assert not (tmp_path / "o.py").exists()


def test_no_pack_is_a_plain_copy(tmp_path):
    out = tmp_path / "o.py"
    assert pgolf(["pack", "--script", str(SCRIPT), "--out", str(out), "--no-pack"]) == 0
    assert out.read_bytes() == SCRIPT.read_bytes()


def corpus_scripts() -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip(f"the upstream corpus is not at {CORPUS} (it lives in the shared folder)")
    found = sorted(CORPUS.rglob("train_gpt*.py"))
    assert found, f"{CORPUS}: no train_gpt*.py"
    return found


# Imports each script given (as a module, so that its main() does not run) with Triton, faking only the modules that
# are not installed here (FlashAttention 3), and prints each script's @triton.jit kernels and whether their source
# was read.
IMPORT_HARNESS = """\
import importlib.abc, importlib.util, sys, types
from triton.runtime.jit import JITFunction
FAKE = {"flash_attn_interface", "gram_newton_schulz"}
class Dummy:
    def __call__(self, *a, **k): return self
    def __getattr__(self, n): return self
def attr(name):
    if name.startswith("__"): raise AttributeError(name)
    return Dummy()
class Fake(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in FAKE: return importlib.util.spec_from_loader(name, self, is_package=True)
    def create_module(self, spec):
        m = types.ModuleType(spec.name); m.__getattr__ = attr; m.__path__ = []; return m
    def exec_module(self, m): pass
sys.meta_path.append(Fake())
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"corpus_{i}", path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException as e:
        print(f"FAIL {path}: {type(e).__name__}: {e}", flush=True); continue
    kernels = []
    for v in vars(mod).values():
        for _ in range(4):  # autotune/heuristics wrap the JITFunction
            if isinstance(v, (JITFunction, Dummy)) or not hasattr(v, "fn"): break
            v = v.fn
        if isinstance(v, JITFunction): kernels.append(f"def {v.fn.__name__}(" in v.src)
    print(f"OK {len(kernels)} {all(kernels)} {path}", flush=True)
"""


@pytest.mark.slow
def test_every_upstream_script_packs_and_compiles(tmp_path):
    """Each corpus script ships packed (smaller, the same code) or as it was (no growth), compiles, and packing the
    result again changes nothing."""
    packed = 0
    for i, path in enumerate(corpus_scripts()):
        source = path.read_bytes()
        out, how = pack.ship(source)
        assert len(out) <= len(source), path
        target = tmp_path / str(i) / path.name
        target.parent.mkdir()
        target.write_bytes(out)
        py_compile.compile(str(target), cfile=str(target) + "c", doraise=True)
        if how == "packed":
            packed += 1
            code = pack.unwrap(out)
            compile(code, path.name, "exec")
            assert code == pack.minify(pack.unwrap(source) or pack.decode_source(source))[0], path
        else:
            assert out == source
        assert pack.ship(out)[0] == out, f"{path}: packing again changed it"
    assert packed >= 30  # all but the wrapped or tiny ones (which this Python may not even parse inside)


@pytest.mark.slow
@needs_triton
def test_upstream_triton_scripts_import_under_triton_once_packed(tmp_path):
    triton_scripts = [p for p in corpus_scripts() if "@triton.jit" in p.read_text(encoding="utf-8")]
    assert len(triton_scripts) >= 5
    shipped = []
    for i, path in enumerate(triton_scripts):
        out, how = pack.ship(path.read_bytes())
        assert how == "packed", path
        target = tmp_path / str(i) / path.name
        target.parent.mkdir()
        target.write_bytes(out)
        shipped.append(str(target))
    harness = tmp_path / "harness.py"
    harness.write_text(IMPORT_HARNESS)
    env = {**os.environ, **TINY_MODEL_ENV, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(harness), *shipped], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("OK", "FAIL"))]
    assert len(lines) == len(shipped), proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in lines:
        ok, count, read = line.split()[:3]
        assert ok == "OK" and int(count) >= 1 and read == "True", line


@pytest.mark.slow
def test_gpu_comparison_benchmark_runs_on_cpu(tiny_data, tmp_path):
    """benchmarks/pack_gpu.py (the GPU proof the lead runs) on CPU: its table, and its verdict for identical runs."""
    bench = SCRIPT.parents[2] / "benchmarks" / "pack_gpu.py"
    tiny = {k: v for k, v in TINY_MODEL_ENV.items() if k != "TRAIN_LOG_EVERY"} | {"VAL_TOKENS_LIMIT": "20000"}
    cmd = [sys.executable, str(bench), "--train-files", tiny_data["train_glob"], "--val-files", tiny_data["val_glob"]]
    cmd += ["--tokenizer", tiny_data["tokenizer_path"], "--out", str(tmp_path / "out"), "--nproc", "1", "--no-control"]
    cmd += ["--stage-timeout", "300", *(f"{k}={v}" for k, v in tiny.items())]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "RESULT: the packed script matches the source exactly" in out
    lines = [line for line in out.splitlines() if line.startswith(("step ", "val_bpb", "weights", "artifact sha"))]
    rows = {line.split("  ")[0]: line.split()[-2:] for line in lines}
    assert "step 8 train_loss" in rows and "weights sha256" in rows and all(a == b for a, b in rows.values())
    packed_bytes = len(pack.ship(SCRIPT.read_bytes())[0])
    assert re.search(rf"^code bytes counted\s+{packed_bytes}\s+{packed_bytes}\s*$", out, re.M)
    assert "the packed run's code ran from: " + str(tmp_path / "out" / "packed" / "tmp" / "pgolf_") in out


def test_minify_drops_only_the_annotations_nothing_reads():
    source = """
import dataclasses

import torch
import triton
import triton.language as tl


@dataclasses.dataclass
class Knobs:
    width: int = 4


def plain(x: torch.Tensor, n: int = 2) -> torch.Tensor:
    y: torch.Tensor = x * n
    return y


@triton.jit
def kernel(X, BLOCK: tl.constexpr):
    pass


@torch.library.custom_op("t::op", mutates_args=())
def op(x: torch.Tensor) -> torch.Tensor:
    return x.clone()
"""
    code, _ = pack.minify(source)
    assert "def plain(x, n=2):" in code and "y = x * n" in code  # nothing reads these
    assert "width: int = 4" in code  # a dataclass field
    assert "BLOCK: tl.constexpr" in code  # Triton reads its kernels' annotations
    assert "def op(x: torch.Tensor) -> torch.Tensor:" in code  # a custom op's schema comes from them


def test_the_readable_copy_of_a_packed_script_is_not_more_code_the_run_uses(tmp_path):
    from pgolf.check import _used_code

    source = SCRIPT.read_text()
    (tmp_path / "train_gpt.py").write_bytes(pack.ship(source)[0])  # its docstring names train_gpt_human.py
    (tmp_path / pack.HUMAN_NAME).write_text(source)
    (tmp_path / "helper.py").write_text("X = 1\n")
    log = "import helper\n"
    assert _used_code(tmp_path, tmp_path / "train_gpt.py", [log]) == [tmp_path / "helper.py"]
    (tmp_path / pack.HUMAN_NAME).write_text(source + "\nEXTRA = 2\n")  # not the shipped code: counted
    assert tmp_path / pack.HUMAN_NAME in _used_code(tmp_path, tmp_path / "train_gpt.py", [log])


def adversarial_byte_strings() -> list[bytes]:
    """Every byte value, the sequences a string literal's escaping can get wrong, and seeded random strings (LZMA's
    output looks random): each also with a quote, a backslash, a NUL, CR and LF at either end."""
    import random

    rng = random.Random(20261202)
    cases = [b"", bytes(range(256)), bytes(range(255, -1, -1))]
    cases += [b"\\", b"\\\\", b"a\\", b'"', b"'", b'""', b'"""', b'""""', b"''''''", b'\\"', b'"\\', b'x"""y']
    cases += [b"\r", b"\n", b"\r\n", b"\n\r", b"\r\r\n", b"\0", b"\x000", b"\x007", b"\x008", b"\0\0\0", b"\\0", b"\\x"]
    cases += [b"\"'\"'\"'", b"'\"\"\"'''", b"\\N{DASH}", b"\\u00e9", b"\x1a\x0c\x0b\x85\xa0\xff\xfe\xef\xbb\xbf"]
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(200)]
    cases += [bytes(rng.choice(b"\"'\\\r\n\0 07") for _ in range(rng.randrange(1, 60))) for _ in range(300)]
    ends = [b"", b'"', b"'", b"\\", b"\0", b"\r", b"\n", b'""', b"''"]
    return cases + [a + c + b for c in cases[:40] for a in ends for b in ends]


def test_latin1_literals_round_trip_through_a_file_read_as_bytes(tmp_path):
    """The writer's literal, in a file that declares latin-1, read from disk as bytes (as Python reads a script) and
    compiled: its value is the bytes again, for either quote; a character is escaped only where it must be."""
    cases = adversarial_byte_strings()
    lines = [pack.CODING, "v = []\n"]
    for data in cases:
        for literal in (pack._literal_as(data, '"'), pack._literal_as(data, "'"), pack._literal(data)):
            lines.append(f"v.append({literal}.encode('latin-1'))\n")
    path = tmp_path / "literals.py"
    path.write_bytes("".join(lines).encode("latin-1"))
    ns: dict = {}
    exec(compile(path.read_bytes(), str(path), "exec"), ns)
    assert ns["v"] == [d for d in cases for _ in range(3)]
    # the escapes are the ones needed: of all 256 byte values, the backslash, CR and NUL (before \x01: "\0")
    assert (
        pack._literal(bytes(range(256)))
        == '"""' + "".join({0: "\\0", 13: "\\r", 92: "\\\\"}.get(b, chr(b)) for b in range(256)) + '"""'
    )
    # a run of quotes: every third is escaped, and one that ends the data; the other quote needs none
    assert pack._literal_as(b'a"""""b"', '"') == '"""a""\\"""b\\""""'
    assert pack._literal(b'a"""""b"') == "'''a\"\"\"\"\"b\"'''"


def test_a_packed_file_runs_from_disk_whatever_its_compressed_bytes(tmp_path):
    """Packed scripts whose compressed bytes hold every byte value run under `python FILE` (which reads the file as
    bytes and honours its coding line), print what their source prints, and unwrap from their bytes."""
    import random

    rng = random.Random(7)
    junk = "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(3000))  # compresses to bytes of every value
    source = (
        f'"""A script — with a non-latin-1 dash in its docstring."""\nJUNK = {junk!r}\n'
        'if __name__ == "__main__":\n    print(len(JUNK), JUNK[:5])\n'
    )
    packed = pack.pack(source)
    blob = lzma.compress(pack.minify(source)[0].encode(), format=lzma.FORMAT_ALONE, filters=pack.FILTERS)
    assert set(blob) >= {0, 13, 10, 34, 39, 92}  # NUL, CR, LF, both quotes, backslash: all in the literal
    assert len(pack._literal(blob)) < 1.03 * len(blob)  # about one byte per byte (base85 added 25%)
    assert len(packed) < len(pack._literal(blob)) + 1100  # and the stub
    path = tmp_path / "packed.py"
    path.write_bytes(packed)
    run = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{len(junk)} {junk[:5]}\n"
    assert pack.unwrap(path.read_bytes()) == pack.minify(source)[0]
    assert pack.unwrap(pack.decode_source(path.read_bytes())) == pack.minify(source)[0]  # its text, as Python reads it
    doc = subprocess.run([sys.executable, "-c", f"import runpy; print(runpy.run_path({str(path)!r})['__doc__'])"],
                         capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})  # fmt: skip
    assert doc.stdout.startswith("A script — with a non-latin-1 dash in its docstring.\n\nPacked by"), doc.stderr
    assert pack.ship(packed) == (packed, "kept as is (packing would not make it smaller)")  # packing again: the same


# What `pgolf pack` wrote before the latin-1 form: base85 text in a UTF-8 file.
OLD_PGOLF_STUB = (
    "import base64,hashlib,linecache,lzma,os,tempfile\n"
    '_c=lzma.decompress(base64.b85decode("{blob}"))\n'
    "_f=os.path.join(tempfile.gettempdir(),'pgolf_'+hashlib.sha256(_c).hexdigest()[:16],"
    "os.path.basename(globals().get('__file__','train_gpt.py')))\n"
    "try:\n"
    " with open(_f,'rb') as _h:_o=_h.read()\n"
    "except OSError:_o=None\n"
    "if _o!=_c:\n"
    " try:\n"
    "  os.makedirs(os.path.dirname(_f),exist_ok=True);_t=f'{{_f}}.{{os.getpid()}}.tmp'\n"
    "  with open(_t,'wb') as _h:_h.write(_c)\n"
    "  os.replace(_t,_f)\n"
    " except OSError:pass\n"
    "_c=_c.decode();linecache.cache[_f]=(len(_c),None,_c.splitlines(True),_f)\n"
    "exec(compile(_c,_f,'exec'))\n"
)


def test_the_base85_packed_form_of_earlier_versions_unwraps_and_repacks_smaller(tmp_path):
    source = SCRIPT.read_text()
    code = pack.minify(source)[0]
    blob = base64.b85encode(lzma.compress(code.encode(), format=lzma.FORMAT_ALONE, filters=pack.FILTERS)).decode()
    old = f'"""{pack._first_doc_line(source)}\n\nPacked."""\n' + OLD_PGOLF_STUB.format(blob=blob)
    assert pack.unwrap(old) == pack.unwrap(old.encode()) == code
    new, how = pack.ship(old)
    assert how == "packed" and new == pack.ship(source)[0] and len(new) < len(old.encode()) - 5000
    (tmp_path / "old.py").write_text(old)
    assert pgolf(["pack", "--script", str(tmp_path / "old.py"), "--out", str(tmp_path / "new.py")]) == 0
    assert (tmp_path / "new.py").read_bytes() == new


def test_sources_are_decoded_as_python_decodes_them(tmp_path):
    latin = "# -*- coding: latin-1 -*-\nS = 'caf\xe9'\n".encode("latin-1")
    assert pack.decode_source(latin) == "# -*- coding: latin-1 -*-\nS = 'caf\u00e9'\n"
    assert pack.decode_source("S = 'caf\u00e9'\n".encode()) == "S = 'caf\u00e9'\n"  # UTF-8 by default
    with pytest.raises(ValueError, match="cannot decode the source"):
        pack.decode_source(b"S = '\xe9'\n")  # not UTF-8, and no coding line says otherwise
    (tmp_path / "bad.py").write_bytes(b"S = '\xe9'\n")
    assert pack.read_source_text(tmp_path / "bad.py") == "S = '\ufffd'\n"  # a text search never fails on it
    assert pgolf(["pack", "--script", str(tmp_path / "bad.py"), "--out", str(tmp_path / "o.py")]) == 2
    # text that declares latin-1 ships as latin-1 bytes when it is kept as it is
    assert pack.ship(latin.decode("latin-1"))[0] == latin
