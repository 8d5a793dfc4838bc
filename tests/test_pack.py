"""The packed training script: smaller, and the same program (same losses, same artifact, its own bytes counted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from conftest import SCRIPT, run_script

from pgolf import pack
from pgolf.cli import main as pgolf


def stage(script, stage_args, tiny_data, tmp_path, tag):
    run_script(
        [*stage_args, "--logfile", str(tmp_path / f"{tag}.log"), "--summary", str(tmp_path / f"{tag}.json")],
        {"SEED": "5"},
        tiny_data,
        tmp_path,
        script=script,
    )
    return (tmp_path / f"{tag}.log").read_text()


def test_packed_script_is_smaller_and_runs_identically(tiny_data, tmp_path):
    packed = tmp_path / "ship" / "train_gpt.py"
    assert pgolf(["pack", "--script", str(SCRIPT), "--out", str(packed)]) == 0
    size, original = packed.stat().st_size, SCRIPT.stat().st_size
    assert size < original / 2
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
    steps = {t: re.findall(r"^step:\d+/\d+ train_loss:\S+", log, re.M) for t, log in logs.items()}
    assert steps["orig"] and steps["orig"] == steps["packed"]
    a, b = (torch.load(tmp_path / f"{t}.pt", weights_only=True)["state_dict"] for t in ("orig", "packed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "orig.ptz").read_bytes() == (tmp_path / "packed.ptz").read_bytes()


def test_minify_drops_docstrings_and_comments_but_keeps_code():
    src = '"""Doc line.\n\nMore."""\n# comment\ndef f(x):\n    """doc"""\n    return x + 1  # trailing\n'
    code, doc = pack.minify(src)
    assert doc == "Doc line." and "comment" not in code and "doc" not in code
    ns = {}
    exec(code, ns)
    assert ns["f"](1) == 2


def test_pack_errors_name_the_file(tmp_path, capsys):
    assert pgolf(["pack", "--script", str(tmp_path / "missing.py"), "--out", str(tmp_path / "o.py")]) == 2
    assert "missing.py: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    assert pgolf(["pack", "--script", str(bad), "--out", str(tmp_path / "o.py")]) == 2
    assert f"{bad}: not valid Python" in capsys.readouterr().err
    assert not (tmp_path / "o.py").exists()


@pytest.mark.parametrize("flag", ["--no-pack"])
def test_no_pack_is_a_plain_copy(tmp_path, flag):
    out = tmp_path / "o.py"
    assert pgolf(["pack", "--script", str(SCRIPT), "--out", str(out), flag]) == 0
    assert out.read_bytes() == SCRIPT.read_bytes()
