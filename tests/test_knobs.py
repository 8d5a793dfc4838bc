"""One owner for every knob: the training script's Hyperparameters table against the config schema, the environment
each stage is given, the config README and the checkpoint/artifact, so that no setting can be dropped, renamed or
overridden on its way (the quantize step once restored the export's bit width from the checkpoint)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from conftest import REPO

from pgolf.stages import EVAL_ENV, QUANTIZE_ENV, train_env

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]


@pytest.fixture(scope="module")
def H(train_script):
    return train_script.Hyperparameters


def test_every_knob_has_a_stage_and_the_architecture_is_only_what_builds_the_model(H, train_script):
    for f in dataclasses.fields(H):
        assert f.metadata["stage"] in train_script.STAGES, f.name
    arch = set(H.knobs(arch=True))
    assert arch == set(train_script.MODEL_KEYS)
    # what the export or the evaluation decides can never come back from a checkpoint
    assert not arch & (set(H.knobs("quantize")) | set(H.knobs("eval")))
    assert {"num_layers", "model_dim", "vocab_size", "bigram_vocab_size", "train_seq_len"} <= arch


def test_the_train_section_is_the_train_and_runtime_knobs(H):
    schema = set(SCHEMA["train"]["properties"]) - {"script", "mode", "env"}
    assert schema == set(H.knobs("train")) | set(H.knobs("runtime"))
    env = train_env({k: 1 for k in schema})
    assert set(env) == {k.upper() for k in schema}  # each key is the script's variable upper-cased


@pytest.mark.parametrize(("section", "mapping"), [("quantize", QUANTIZE_ENV), ("eval", EVAL_ENV)])
def test_the_quantize_and_eval_sections_reach_exactly_their_stage_s_knobs(H, section, mapping):
    assert {v.lower() for v in mapping.values()} == set(H.knobs(section))
    assert all(v == k.upper() for k, v in mapping.items())  # the config key is the script's name
    schema = set(SCHEMA[section]["properties"]) - {"time_budget_s"}
    assert schema == set(mapping) == set(H.knobs(section))


def test_schema_defaults_and_types_agree_with_the_script(H):
    defaults = {f.name: f.default for f in dataclasses.fields(H)}
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    types = {"integer": int, "number": (int, float), "boolean": bool, "string": str}
    for section, mapping in (("train", None), ("quantize", QUANTIZE_ENV), ("eval", EVAL_ENV)):
        for key, spec in SCHEMA[section]["properties"].items():
            name = (mapping[key].lower() if mapping else key) if (mapping is None or key in mapping) else None
            if name not in defaults:
                continue
            t = spec.get("type")
            if isinstance(t, str) and t in types:
                assert isinstance(defaults[name], types[t]), (section, key, defaults[name], t)
            if "enum" in spec:
                assert defaults[name] in spec["enum"], (section, key)
    # the production config's quantize/eval values are the script's defaults unless the config says why not
    for key, value in config["quantize"].items():
        if key != "enforce_cap":  # the pipeline enforces the cap; the script alone (a hand run) only warns
            assert defaults[QUANTIZE_ENV[key].lower()] == value, key


def test_the_config_readme_names_every_configurable_key():
    readme = (REPO / "config" / "README.md").read_text()
    for section in ("quantize", "eval"):
        for key in SCHEMA[section]["properties"]:
            assert re.search(rf"`{key}`", readme), f"config/README.md: {section}.{key} undocumented"


def test_hyperparameters_are_built_once_and_never_mutated(H):
    args = H.from_env({"NUM_LAYERS": "3", "EVAL_SEQ_LEN": ""})
    assert args.num_layers == 3 and args.eval_seq_len == args.train_seq_len
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.num_layers = 4
    other = args.with_model({**args.model(), "train_seq_len": 128}, "ckpt")
    assert other.eval_seq_len == 128 and args.eval_seq_len == 2048  # derived again, the original untouched
    explicit = H.from_env({"EVAL_SEQ_LEN": "256"}).with_model({**args.model(), "train_seq_len": 128}, "ckpt")
    assert explicit.eval_seq_len == 256
    with pytest.raises(SystemExit, match="no num_layers"):
        args.with_model({k: v for k, v in args.model().items() if k != "num_layers"}, "old.pt")
    with pytest.raises(SystemExit, match="NUM_LAYERS='x': expected int"):
        H.from_env({"NUM_LAYERS": "x"})
