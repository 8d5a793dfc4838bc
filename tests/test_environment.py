"""environment.yml (the conda route, `--software-deployment-method conda`) against pyproject.toml: the same pins,
so the two ways of installing the project never drift apart."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import REPO


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_yml_pins_what_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = pins(project["dependencies"])
    extras = pins(project["optional-dependencies"]["cpu"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip  # the project itself
    conda = pins(pip)
    missing = {k: v for k, v in runtime.items() if conda.get(k) != v}
    assert not missing, f"environment.yml lacks or mis-pins these runtime pins of pyproject.toml: {missing}"
    assert conda["torch"] == extras["torch"]  # the CPU build the tests use
    drift = {k: (v, {**runtime, **extras}.get(k)) for k, v in conda.items() if {**runtime, **extras}.get(k) != v}
    assert not drift, f"environment.yml pins that pyproject.toml does not (or differently): {drift}"
    python = re.fullmatch(r"python=(\d+\.\d+)", next(d for d in env["dependencies"] if str(d).startswith("python")))
    assert python and tuple(map(int, python.group(1).split("."))) >= (3, 11)
