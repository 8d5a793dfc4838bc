"""The self-contained training script: model pieces, optimizer grouping, exact scoring, stages and their files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SCRIPT, load_script, run_script


def small_args(mod, **overrides):
    base = dict(
        vocab_size=64,
        num_layers=3,
        model_dim=32,
        num_heads=4,
        num_kv_heads=2,
        bigram_vocab_size=32,
        bigram_dim=8,
        train_seq_len=16,
        eval_seq_len=16,
        eval_batch_seqs=3,
        xsa_last_n=2,
    )
    base.update(overrides)
    return mod.Hyperparameters(**base)


def test_every_parameter_in_exactly_one_optimizer_group(train_script):
    mod = train_script
    model = mod.GPT(small_args(mod))
    groups = mod.param_groups(model)
    seen = [id(p) for g in groups.values() for _, p in g]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert all(p.ndim == 2 for _, p in groups["muon"])
    assert {n for n, _ in groups["embed"]} == {"tok_emb.weight", "bigram.embed.weight"}
    rt = mod.Runtime()
    opts = mod.build_optimizers(model, small_args(mod), rt)
    in_opts = [id(p) for o in opts for g in o.param_groups for p in g["params"]]
    assert sorted(in_opts) == sorted(seen)


@pytest.mark.parametrize("n,seq_len,stride", [(1, 8, 4), (7, 8, 4), (100, 16, 4), (100, 16, 16), (101, 16, 5)])
def test_score_windows_score_every_target_once_in_order(train_script, n, seq_len, stride):
    windows = train_script.score_windows(n, seq_len, stride)
    scored = [t for s, e, k in windows for t in range(e - k + 1, e + 1)]
    assert scored == list(range(1, n + 1))
    for s, e, k in windows:
        assert 0 <= s < e and e - s <= seq_len and k <= e - s
        if s > 0:
            assert e - s == seq_len  # only the first window may be short
            assert k <= stride


@pytest.mark.slow
def test_sliding_eval_equals_token_by_token_reference(train_script):
    mod = train_script
    args = small_args(mod)
    torch.manual_seed(0)
    model = mod.GPT(args)
    with torch.no_grad():
        for p in model.parameters():  # random everywhere, so every output depends on the context
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.RandomState(0)
    tokens = rng.randint(4, 64, size=150).astype(np.uint16)
    tokens[[0, 40, 90]] = 1
    base = rng.randint(1, 4, size=64)
    space = rng.rand(64) < 0.5
    boundary = np.zeros(64, dtype=bool)
    boundary[:4] = True
    luts = (base, space, boundary)
    rt = mod.Runtime()
    stride = 5
    res = mod.evaluate(model, tokens, luts, args, rt, stride)
    nll, nbytes = 0.0, 0
    toks = torch.from_numpy(tokens.astype(np.int64))
    model.eval()
    with torch.no_grad():
        for s, e, k in mod.score_windows(tokens.size - 1, args.eval_seq_len, stride):
            for t in range(e - k + 1, e + 1):  # target position t, context tokens[s:t]
                logits = model.logits(toks[None, s:t])[0, -1]
                nll += float(torch.log_softmax(logits.double(), -1)[toks[t]].neg())
                nbytes += int(base[tokens[t]] + (space[tokens[t]] and not boundary[tokens[t - 1]]))
    assert res["tokens"] == tokens.size - 1
    assert res["bytes"] == nbytes
    assert res["val_loss"] == pytest.approx(nll / (tokens.size - 1), rel=1e-5)
    assert res["val_bpb"] == pytest.approx(nll / (np.log(2) * nbytes), rel=1e-5)


def test_byte_counts_equal_utf8_length_of_decoded_text(train_script, tiny_data):
    import sentencepiece as spm

    from pgolf.data import read_shard

    sp = spm.SentencePieceProcessor(model_file=tiny_data["tokenizer_path"])
    luts = train_script.byte_luts(sp, 1024)
    tokens = read_shard(tiny_data["val_files"][0])
    total = int(train_script.token_bytes(tokens[:-1], tokens[1:], luts).sum())
    docs = np.split(tokens, np.flatnonzero(tokens == 1))[1:]
    text_bytes = sum(len(sp.decode(d[1:].tolist()).encode("utf-8")) for d in docs)
    assert total == text_bytes


def test_quantize_dequantize_is_what_the_quantizer_intended(train_script):
    mod = train_script
    args = small_args(mod, quant_keep_float_numel=16, quant_bits_matrix=6, quant_bits_embed=8)
    torch.manual_seed(1)
    state = {k: v.detach().clone() for k, v in mod.GPT(args).state_dict().items()}
    payload, report = mod.quantize_state(state, args)
    back = mod.dequantize_state(payload)
    assert set(back) == set(state)
    for name, q in payload["q"].items():
        qmax = 31 if "emb" not in name else 127
        assert q.dtype == torch.int8 and int(q.abs().max()) <= qmax
        err = (back[name] - state[name]).abs()
        step = payload["scales"][name].float()[:, None]
        inside = state[name].abs() <= qmax * step
        assert torch.all(err[inside] <= (step / 2 + 1e-6).expand_as(err)[inside])  # round-to-nearest on the grid
        assert torch.all(q.abs()[~inside] == qmax)  # clipped rows saturate
    kinds = list(report.values())
    assert kinds.count("attn") > 0 and kinds.count("embed") == 2  # token + bigram embeddings


@pytest.mark.slow
def test_stages_train_quantize_eval_and_corrupt_artifact(train_script, tiny_data, tmp_path):
    ckpt, art = tmp_path / "ckpt.pt", tmp_path / "model.ptz"
    run_script(
        [
            "--stage",
            "train",
            "--checkpoint",
            str(ckpt),
            "--logfile",
            str(tmp_path / "t.log"),
            "--summary",
            str(tmp_path / "t.json"),
        ],
        {"SEED": "3"},
        tiny_data,
        tmp_path,
    )
    run_script(
        [
            "--stage",
            "quantize",
            "--checkpoint",
            str(ckpt),
            "--artifact",
            str(art),
            "--logfile",
            str(tmp_path / "q.log"),
            "--summary",
            str(tmp_path / "q.json"),
        ],
        {},
        tiny_data,
        tmp_path,
    )
    run_script(
        [
            "--stage",
            "eval",
            "--artifact",
            str(art),
            "--logfile",
            str(tmp_path / "e.log"),
            "--summary",
            str(tmp_path / "e.json"),
        ],
        {},
        tiny_data,
        tmp_path,
    )
    tr, qu, ev = (json.loads((tmp_path / f"{s}.json").read_text()) for s in "tqe")
    assert tr["steps"] == 8 and tr["attention_backend"] == "sdpa"
    assert qu["artifact_bytes"] == art.stat().st_size
    assert qu["code_bytes"] == SCRIPT.stat().st_size
    assert qu["bytes_total"] == qu["code_bytes"] + qu["artifact_bytes"]
    assert qu["gptq"] is True and tr["gptq_calib_tokens"] > 0 and "hessians" in torch.load(ckpt, weights_only=True)
    full = [e["bytes"] for e in qu["encodings"].values() if e["full"]]
    assert qu["artifact_bytes"] == min(full) and qu["prune_frac"] == 0.0
    assert ev["sliding_val_bpb"] is not None and ev["val_bpb"] == ev["sliding_val_bpb"]
    assert 0 < ev["val_bpb"] < 10
    # the quantized model scores close to the checkpoint it came from
    assert abs(ev["roundtrip_val_bpb"] - tr["pre_quant_val_bpb"]) < 0.05
    log = (tmp_path / "e.log").read_text()
    assert re.search(r"final_int6_(zstd|brotli|xz)_sliding_window_exact val_loss:[\d.]+ val_bpb:[\d.]+", log)
    # a truncated artifact is refused with an error that names the file
    bad = tmp_path / "bad.ptz"
    bad.write_bytes(art.read_bytes()[: art.stat().st_size // 2])
    proc = run_script(["--stage", "eval", "--artifact", str(bad)], {}, tiny_data, tmp_path, check=False)
    assert proc.returncode != 0 and "bad.ptz" in proc.stderr and "corrupted or truncated" in proc.stderr
    junk = tmp_path / "junk.ptz"
    junk.write_bytes(b"not an artifact at all")
    proc = run_script(["--stage", "eval", "--artifact", str(junk)], {}, tiny_data, tmp_path, check=False)
    assert proc.returncode != 0 and "junk.ptz" in proc.stderr and "not a pgolf artifact" in proc.stderr
    # without Hessians in the checkpoint the quantizer says so and uses the clip search alone
    ck = torch.load(ckpt, weights_only=True)
    ck["hessians"] = None
    torch.save(ck, tmp_path / "noh.pt")
    q2 = ["--stage", "quantize", "--checkpoint", str(tmp_path / "noh.pt"), "--artifact", str(tmp_path / "noh.ptz")]
    proc = run_script([*q2, "--summary", str(tmp_path / "q2.json")], {}, tiny_data, tmp_path)
    assert "gptq:off (no Hessians: clip search only)" in proc.stdout
    assert json.loads((tmp_path / "q2.json").read_text())["gptq"] is False


def train_losses(log: str) -> list[str]:
    return re.findall(r"step:\d+/\d+ train_loss:([\d.]+)", log)


@pytest.mark.slow
def test_same_seed_same_losses_on_two_ranks(tiny_data, tmp_path):
    logs = []
    for i in range(2):
        run_script(
            ["--stage", "train", "--checkpoint", str(tmp_path / f"c{i}.pt"), "--logfile", str(tmp_path / f"{i}.log")],
            {"SEED": "11"},
            tiny_data,
            tmp_path,
            nproc=2,
        )
        logs.append((tmp_path / f"{i}.log").read_text())
    assert len(train_losses(logs[0])) == 8
    assert train_losses(logs[0]) == train_losses(logs[1])
    other = tmp_path / "other.log"
    run_script(
        ["--stage", "train", "--checkpoint", str(tmp_path / "c2.pt"), "--logfile", str(other)],
        {"SEED": "12"},
        tiny_data,
        tmp_path,
        nproc=2,
    )
    assert train_losses(other.read_text()) != train_losses(logs[0])


def test_wallclock_cap_stops_training(tiny_data, tmp_path):
    log = tmp_path / "cap.log"
    run_script(
        [
            "--stage",
            "train",
            "--checkpoint",
            str(tmp_path / "c.pt"),
            "--logfile",
            str(log),
            "--summary",
            str(tmp_path / "s.json"),
        ],
        {"ITERATIONS": "100000", "MAX_WALLCLOCK_SECONDS": "3", "GPTQ_RESERVE_SECONDS": "1"},
        tiny_data,
        tmp_path,
    )
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_early"] is True and 0 < summary["steps"] < 100000
    assert summary["train_time_s"] < 10
    assert re.search(r"stopping_early: wallclock_cap train_time:\d+ms step:\d+/100000", log.read_text())
    assert "gptq_reserve_s:1.0 training loop cap:2.0s" in log.read_text() and summary["gptq_calib_time_s"] > 0


def test_attention_fallback_and_forced_flash_attention(tiny_data, tmp_path):
    proc = run_script(
        ["--stage", "train", "--checkpoint", str(tmp_path / "c.pt"), "--logfile", str(tmp_path / "a.log")],
        {"ITERATIONS": "1"},
        tiny_data,
        tmp_path,
    )
    assert "attention_backend:sdpa" in proc.stdout
    for backend, missing in (("fa3", "flash_attn_interface"), ("fa4", "flash_attn.cute (flash-attn-4)")):
        proc = run_script(
            ["--stage", "train", "--checkpoint", str(tmp_path / "c.pt")],
            {"ATTN_BACKEND": backend},
            tiny_data,
            tmp_path,
            check=False,
        )
        assert proc.returncode != 0 and f"{missing} is not importable" in proc.stderr


def test_bad_hyperparameter_is_named(tiny_data, tmp_path):
    proc = run_script(
        ["--stage", "train", "--checkpoint", str(tmp_path / "c.pt")],
        {"NUM_LAYERS": "eleven"},
        tiny_data,
        tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and "NUM_LAYERS='eleven'" in proc.stderr


def test_folded_output_scale_equals_scaling_the_output_in_value_and_gradients(train_script):
    torch.manual_seed(0)
    lin = train_script.CastedLinear(8, 6)
    x = torch.randn(5, 8)
    s1 = torch.randn(6, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    folded = lin(x, s1)
    (folded**2).sum().backward()
    g_w1, lin.weight.grad = lin.weight.grad.clone(), None
    scaled = s2 * lin(x)
    (scaled**2).sum().backward()
    torch.testing.assert_close(folded, scaled)
    torch.testing.assert_close(s1.grad, s2.grad)
    torch.testing.assert_close(g_w1, lin.weight.grad)


def test_batched_newton_schulz_equals_one_matrix_at_a_time(train_script):
    torch.manual_seed(0)
    gs = torch.randn(3, 12, 20)
    batched = train_script.newton_schulz5(gs, 5)
    for g, b in zip(gs, batched, strict=True):
        torch.testing.assert_close(train_script.newton_schulz5(g, 5), b, rtol=1e-4, atol=1e-5)
    tall = train_script.newton_schulz5(gs.mT, 5)  # tall matrices are orthogonalised through their transpose
    torch.testing.assert_close(tall, batched.mT, rtol=1e-4, atol=1e-5)


def test_depth_recurrence_runs_the_group_twice_with_shared_weights(train_script):
    mod = train_script
    assert mod.block_order(6, "") == [0, 1, 2, 3, 4, 5]
    assert mod.block_order(6, "2,3") == [0, 1, 2, 3, 2, 3, 4, 5]
    for bad in ("2,4", "5,6", "x"):
        with pytest.raises(SystemExit, match="RECUR_LAYERS"):
            mod.block_order(6, bad)
    plain, recur = mod.GPT(small_args(mod)), mod.GPT(small_args(mod, recur_layers="1"))
    calls = []
    recur.blocks[1].register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randint(0, 64, (2, 16))
    assert torch.isfinite(recur(x, x)) and len(calls) == 2
    n = lambda m: sum(p.numel() for name, p in m.named_parameters() if name != "skip_weights")  # noqa: E731
    assert n(plain) == n(recur)  # no new weights: the group's blocks run again
    flops = [mod.model_flops_per_token(small_args(mod, recur_layers=r), 16) for r in ("", "1")]
    assert flops[1] > flops[0]


@pytest.mark.parametrize("qat", [False, True])
def test_fused_qkv_equals_the_three_projections(train_script, qat):
    mod = train_script
    torch.manual_seed(0)
    attn = mod.GPT(small_args(mod, late_qat=True)).blocks[0].attn
    for m in (attn.c_q, attn.c_k, attn.c_v):
        m.qat_on.fill_(1.0 if qat else 0.0)
    x = torch.randn(2, 16, 32)
    parts = attn.qkv(x).split((attn.h * attn.hd, attn.kv * attn.hd, attn.kv * attn.hd), dim=-1)
    for fused, single in zip(parts, (attn.c_q(x), attn.c_k(x), attn.c_v(x)), strict=True):
        torch.testing.assert_close(fused, single)


@pytest.mark.parametrize("bf16", [False, True])
def test_residual_stream_dtype_follows_the_switch_under_autocast(train_script, bf16):
    mod = train_script
    model = mod.GPT(small_args(mod, residual_bf16=bf16))
    seen = []
    for b in model.blocks:
        b.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].dtype))
    x = torch.randint(0, 64, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, x)
    assert torch.isfinite(loss)
    assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    seen.clear()
    model(x, x)  # without autocast the switch changes nothing
    assert set(seen) == {torch.float32}


def _causal_reference(q, k, v):
    """fp32 causal attention on (B, T, H, D) queries and (B, T, KV, D) keys/values, with the log-sum-exp (B, H, T)."""
    rep = q.shape[2] // k.shape[2]
    qh, kh, vh = (t.float().transpose(1, 2) for t in (q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)))
    s = qh @ kh.transpose(-1, -2) / q.shape[-1] ** 0.5
    s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    return (torch.exp(s - lse[..., None]) @ vh).transpose(1, 2).to(q.dtype), lse


def test_attend_backends_agree_with_the_reference_gqa_included(train_script):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 16, 4, 8), torch.randn(2, 16, 2, 8), torch.randn(2, 16, 2, 8)
    ref = _causal_reference(q, k, v)[0]
    for backend in ("sdpa", "sdpa_efficient"):  # GQA native / KV heads expanded
        assert torch.allclose(train_script.attend(q, k, v, backend), ref, atol=1e-5), backend


def test_fa4_custom_ops_train_like_sdpa_under_compile(monkeypatch):
    """The FA4 wrapper (custom ops, fake shapes, saved tensors, gradient order) with reference kernels standing in
    for FA4's: compiled forward and backward through it equal SDPA's."""
    train_script = load_script()  # the latest import owns the registered custom ops: patch that one

    def fwd_kernel(q, k, v, causal, return_lse):
        assert causal and return_lse and all(t.is_contiguous() for t in (q, k, v))
        return (*_causal_reference(q, k, v), None)  # later FA4 betas return extra values

    def bwd_kernel(q, k, v, out, dout, lse, causal):  # the attention backward written out (custom ops run below
        assert causal and dout.is_contiguous() and lse.shape == (q.shape[0], q.shape[2], q.shape[1])  # autograd)
        B, T, H, D = q.shape
        rep = H // k.shape[2]
        qh, kh, vh, oh, doh = (
            t.transpose(1, 2) for t in (q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2), out, dout)
        )
        s = qh @ kh.transpose(-1, -2) / D**0.5
        p = torch.exp(s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")) - lse[..., None])
        ds = p * (doh @ vh.transpose(-1, -2) - (doh * oh).sum(-1, keepdim=True))
        dq, dk, dv = ds @ kh / D**0.5, ds.transpose(-1, -2) @ qh / D**0.5, p.transpose(-1, -2) @ doh
        dk, dv = (t.transpose(1, 2).reshape(B, T, H // rep, rep, D).sum(3) for t in (dk, dv))
        return dq.transpose(1, 2), dk, dv, None

    monkeypatch.setattr(train_script, "fa4_fwd_kernel", fwd_kernel)
    monkeypatch.setattr(train_script, "fa4_bwd_kernel", bwd_kernel)
    grads, outs = {}, {}
    for backend in ("sdpa", "fa4"):
        torch.manual_seed(1)
        q, kv = torch.randn(2, 16, 4, 8, requires_grad=True), torch.randn(2, 16, 4, 8, requires_grad=True)

        def f(q, kv, backend=backend):  # k and v are strided views, as the model's q/k/v split gives them
            return (train_script.attend(q, kv[:, :, :2], kv[:, :, 2:], backend) * torch.arange(8.0)).sum()

        fn = torch.compile(f, backend="aot_eager", fullgraph=True) if backend == "fa4" else f
        outs[backend] = fn(q, kv)
        grads[backend] = torch.autograd.grad(outs[backend], (q, kv))
    assert torch.allclose(outs["fa4"], outs["sdpa"], atol=1e-4)
    for a, b in zip(grads["fa4"], grads["sdpa"], strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_fused_relu2_mlp_matches_the_module_path_with_gradients(monkeypatch):
    """The relu^2 MLP op (custom op + backward op, hidden activation saved instead of the pre-activation) gives the
    plain modules' output and gradients, eagerly and under torch.compile, including the backward's 2 sqrt(a) form."""
    mod = load_script()
    torch.manual_seed(0)
    x = torch.randn(64, 32, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(96, 32, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(32, 96, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(64, 32, dtype=torch.float64)
    ref = F.relu(x @ w1.T).square() @ w2.T
    ref_grads = torch.autograd.grad(ref, (x, w1, w2), dy)
    compiled = torch.compile(lambda *t: mod.relu2_mlp(*t)[0], backend="aot_eager", fullgraph=True)
    for fn in (lambda *t: mod.relu2_mlp(*t)[0], compiled):
        y = fn(x, w1, w2)
        assert torch.allclose(y, ref)
        for g, r in zip(torch.autograd.grad(y, (x, w1, w2), dy), ref_grads, strict=True):
            assert torch.allclose(g, r)
    a = mod.relu2_mm(x.detach(), w1.detach().T)
    assert torch.equal(a, F.relu(x.detach() @ w1.detach().T).square()) and (a == 0).any()


@pytest.mark.parametrize("rope_dims", [16, 4])
def test_fused_qk_prep_matches_the_module_path_with_gradients(rope_dims):
    """The q/k preparation op (RMSNorm + partial RoPE + q_gain on q, the same without gain on k, v copied) gives the
    module path's q, k, v and the gradients of qkv and q_gain, eagerly and under torch.compile; its backward is the
    hand-derived formula the Triton kernel uses (RoPE's transpose, RMSNorm's backward), not autograd."""
    mod = load_script()
    torch.manual_seed(0)
    B, T, H, KV, D = 2, 12, 4, 2, 16
    qkv = torch.randn(B, T, (H + 2 * KV) * D, dtype=torch.float64, requires_grad=True)
    gain = (1.5 + 0.1 * torch.randn(H, dtype=torch.float64)).requires_grad_()
    rot = mod.Rotary(rope_dims, 10000.0, T)
    cos, sin = (t[0, :, 0] for t in rot(T, "cpu", torch.float64))
    grads_out = [torch.randn(B, T, n, D, dtype=torch.float64) for n in (H, KV, KV)]
    ref = mod.qk_prep_plain(qkv, cos, sin, gain, H, KV)  # the module path: F.rms_norm, apply_rotary, autograd
    ref_grads = torch.autograd.grad(ref, (qkv, gain), grads_out)
    op = lambda qkv, gain: mod.qk_prep(qkv, cos, sin, gain, H, KV)  # noqa: E731
    for fn in (op, torch.compile(op, backend="aot_eager", fullgraph=True)):
        out = fn(qkv, gain)
        for o, r in zip(out, ref, strict=True):
            assert o.shape == r.shape and o.is_contiguous()
            torch.testing.assert_close(o, r)
        for g, r in zip(torch.autograd.grad(out, (qkv, gain), grads_out), ref_grads, strict=True):
            torch.testing.assert_close(g, r)


def test_fused_qk_prep_applies_only_to_power_of_two_heads():
    mod = load_script()
    if mod.triton is None:
        assert not mod.qk_prep_fusable(8, 4, 64, 16)
        pytest.skip("no Triton in this torch build: the q/k op is never fused here")
    assert mod.qk_prep_fusable(8, 4, 64, 16)
    assert not mod.qk_prep_fusable(6, 3, 64, 16) and not mod.qk_prep_fusable(8, 4, 64, 0)


def test_every_stage_runs_with_the_compile_cache_under_the_working_folder(tmp_path, monkeypatch, capsys):
    from pgolf import stages

    script = tmp_path / "show_env.py"
    names = list(stages.COMPILE_CACHE)
    script.write_text(f"import os\nfor k in {names!r}:\n    print('got', k, os.environ.get(k))\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for k in names:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/of/mine")  # the user's own: kept, and the log says so
    stages.launch(str(script), [], {"SEED": "1"}, 0)
    out = capsys.readouterr().out
    got = dict(line.split()[1:] for line in out.splitlines() if line.startswith("got "))
    assert got == {
        "TORCHINDUCTOR_CACHE_DIR": ".cache/torchinductor",
        "TRITON_CACHE_DIR": "/somewhere/of/mine",
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }
    assert (work / ".cache" / "torchinductor").is_dir() and not (work / ".cache" / "triton").exists()
    line = next(x for x in out.splitlines() if x.startswith("compile cache:"))
    assert "TORCHINDUCTOR_CACHE_DIR=.cache/torchinductor" in line
    assert "TRITON_CACHE_DIR=/somewhere/of/mine (already set)" in line
    # a stage's own environment (e.g. the train section's env) wins too
    env, line = stages.compile_cache_env({"TORCHINDUCTOR_FX_GRAPH_CACHE": "0"}, tmp_path / "elsewhere")
    assert "TORCHINDUCTOR_FX_GRAPH_CACHE" not in env and "TORCHINDUCTOR_FX_GRAPH_CACHE=0 (already set)" in line
    assert env["TRITON_CACHE_DIR"] == str((tmp_path / "elsewhere" / ".cache" / "triton").resolve())


def test_the_eval_warm_up_runs_exactly_the_batch_shapes_the_scoring_runs(train_script):
    mod = train_script
    args = small_args(mod, eval_batch_seqs=4)
    rt = mod.Runtime()
    model = mod.GPT(args)
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x, y, reduction="mean", last=0):
            seen.append((tuple(x.shape), last, torch.is_grad_enabled(), self.inner.training))
            return self.inner(x, y, reduction=reduction, last=last)

    net = Recorder()
    tokens = np.random.default_rng(0).integers(0, args.vocab_size, 203).astype(np.uint16)
    n = args.vocab_size
    luts = mod.ByteLuts(np.ones(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    strides = [args.eval_seq_len, 4]
    _, n_shapes = mod.warm_up_eval(net, tokens.size - 1, args, rt, strides)
    warm, seen[:] = set(seen), []
    for stride in strides:
        mod.evaluate(net, tokens, luts, args, rt, stride)
    assert warm == set(seen) and n_shapes == len(warm) >= 4  # full and last batches of both passes
    assert all(not grad and not training for _, _, grad, training in warm)
