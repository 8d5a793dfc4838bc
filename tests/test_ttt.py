"""Legal score-first test-time training (eval.ttt_*): every validation target is scored exactly once, by weights that
no update trained on it (the trace of `evaluate_ttt` names, for each scored window, how many updates came before it,
and for each update the positions it read); with a reset after every chunk the score is the plain sliding one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_script
from test_eval import artifact  # noqa: F401  (the fixture: a tiny model trained and quantized once)
from test_train_script import small_args


def check_score_first(trace: list, n_targets: int) -> None:
    """Raise AssertionError unless every target 1..n_targets was scored exactly once and every position an update
    read (inputs a..last-1, targets a+1..last) had been scored before that update was applied."""
    scored_at = np.full(n_targets + 1, -1)
    for kind, count, first, last in trace:
        if kind == "score":
            assert (scored_at[first : last + 1] == -1).all(), f"targets {first}..{last} scored twice"
            scored_at[first : last + 1] = count
    assert (scored_at[1:] >= 0).all(), "some target was never scored"
    for kind, u, a, last in trace:
        if kind == "update":
            seen = scored_at[max(a, 1) : last + 1]
            assert (seen <= u).all(), f"update {u} read positions {a}..{last} before they were all scored"


def setup(mod, **over):
    args = small_args(mod, ttt_epochs=2, ttt_lr=0.05, ttt_chunk_tokens=40, **over)
    torch.manual_seed(0)
    model = mod.GPT(args)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.RandomState(0)
    tokens = rng.randint(4, 64, size=301).astype(np.uint16)
    tokens[[0, 70, 150]] = 1
    luts = (rng.randint(1, 4, size=64), rng.rand(64) < 0.5, np.arange(64) < 4)
    return args, model, tokens, luts


def test_every_target_is_scored_once_before_any_update_that_read_it(train_script):
    mod = train_script
    args, model, tokens, luts = setup(mod)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace: list = []
    res = mod.evaluate_ttt(model, model, tokens, luts, args, mod.Runtime(), 4, trace)
    check_score_first(trace, tokens.size - 1)
    n_chunks = len(mod.ttt_chunks(tokens.size - 1, args, 4))
    assert res["ttt_chunks"] == n_chunks > 3 and res["ttt_updates"] == 2 * (n_chunks - 1)
    assert res["tokens"] == tokens.size - 1
    assert sum(1 for e in trace if e[0] == "score" and e[1] > 0) > 0  # later chunks were scored by updated weights
    for k, v in model.state_dict().items():  # the model comes back as it came
        assert torch.equal(v, before[k]), k
    plain = mod.evaluate(model, tokens, luts, args, mod.Runtime(), 4)
    assert res["bytes"] == plain["bytes"] and res["val_bpb"] != pytest.approx(plain["val_bpb"], abs=1e-7)


def test_the_order_check_rejects_an_update_before_the_score():
    ok = [("score", 0, 1, 10), ("update", 0, 0, 10), ("score", 1, 11, 20)]
    check_score_first(ok, 20)
    with pytest.raises(AssertionError, match="before they were all scored"):
        check_score_first([("update", 0, 0, 10), ("score", 1, 1, 10), ("score", 1, 11, 20)], 20)
    with pytest.raises(AssertionError, match="before they were all scored"):  # an update that read ahead
        check_score_first([("score", 0, 1, 10), ("update", 0, 0, 12), ("score", 1, 11, 20)], 20)
    with pytest.raises(AssertionError, match="scored twice"):
        check_score_first([("score", 0, 1, 10), ("score", 0, 5, 20)], 20)


def test_a_reset_after_every_chunk_gives_the_plain_sliding_score(train_script):
    mod = train_script
    args, model, tokens, luts = setup(mod, ttt_reset_chunks=1)
    res = mod.evaluate_ttt(model, model, tokens, luts, args, mod.Runtime(), 4)
    plain = mod.evaluate(model, tokens, luts, args, mod.Runtime(), 4)
    assert res["ttt_updates"] > 0
    assert res["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-12)
    zero = mod.evaluate_ttt(model, model, tokens, luts, args.replace(ttt_reset_chunks=0, ttt_lr=0.0), mod.Runtime(), 4)
    assert zero["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-12)


def test_ttt_params_selects_the_trained_tensors(train_script):
    mod = train_script
    args, model, tokens, luts = setup(mod, ttt_params="blocks.2.mlp.proj, skip_weights")
    res = mod.evaluate_ttt(model, model, tokens, luts, args, mod.Runtime(), 4)
    want = model.blocks[2].mlp.proj.weight.numel() + model.skip_weights.numel()
    assert res["ttt_params"] == want
    with pytest.raises(SystemExit, match="TTT_PARAMS='nothing'"):
        mod.evaluate_ttt(model, model, tokens, luts, args.replace(ttt_params="nothing"), mod.Runtime(), 4)


def test_padded_batches_of_a_compiled_net_score_the_same(train_script):
    """With a compiled net (any net that is not the model itself) every scoring batch is padded to EVAL_BATCH_SEQS
    windows that score nothing, so that its shapes are those compiled before the timed pass: the same score."""
    mod = train_script
    args, model, tokens, luts = setup(mod, eval_batch_seqs=4)

    class Net(torch.nn.Module):  # stands in for torch.compile's wrapper: the same parameters
        def __init__(self, m):
            super().__init__()
            self.m, self.shapes = m, set()

        def forward(self, x, y, reduction="mean", last=0):
            self.shapes.add((x.shape[0], x.shape[1], last))
            return self.m(x, y, reduction=reduction, last=last)

    net = Net(model)
    padded = mod.evaluate_ttt(model, net, tokens, luts, args, mod.Runtime(), 4)
    plain = mod.evaluate_ttt(model, model, tokens, luts, args, mod.Runtime(), 4)
    assert net.shapes == {(4, 16, 0), (4, 16, 4)}  # the first window (all 16 targets), then stride-4 windows
    assert padded["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-9) and padded["bytes"] == plain["bytes"]


@pytest.mark.slow
def test_two_ranks_make_the_ttt_score_one_rank_makes(tiny_data, artifact, tmp_path):  # noqa: F811
    """The evaluation stage with TTT on, one process and two ranks (gloo): the ranks split the windows and the
    sequences of each chunk and sum their gradients, so the score is the one rank's (up to float summation order),
    and it is the stage's val_bpb, the sliding pass's kept apart."""
    env = {"EVAL_STRIDE": "16", "TTT_EPOCHS": "2", "TTT_CHUNK_TOKENS": "2048", "TTT_LR": "0.01"}
    res = []
    for nproc in (0, 2):
        out = tmp_path / f"e{nproc}.json"
        run_script(["--stage", "eval", "--artifact", str(artifact / "m.ptz"), "--summary", str(out)], env, tiny_data,
                   tmp_path, nproc=nproc)  # fmt: skip
        res.append(json.loads(out.read_text()))
    one, two = res
    assert one["ttt"]["ttt_epochs"] == 2 and one["ttt_timing"]["ttt_updates"] > 2
    assert one["val_bpb"] == one["ttt_val_bpb"] != one["sliding_val_bpb"]
    assert two["ttt_val_bpb"] == pytest.approx(one["ttt_val_bpb"], rel=1e-5)
    assert two["sliding_val_bpb"] == pytest.approx(one["sliding_val_bpb"], rel=1e-6)
