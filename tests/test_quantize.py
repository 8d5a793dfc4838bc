"""The export: quantization exactness, error-aware rounding, compressor/layout choice, prune-to-fit, bad artifacts."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script
from test_train_script import small_args


@pytest.fixture()
def mod():
    return load_script()  # fresh module: tests may change its cap


def tiny_state(mod, **kw):
    args = small_args(mod, quant_keep_float_numel=16, **kw)
    torch.manual_seed(1)
    model = mod.GPT(args)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return args, model


@pytest.mark.slow
def test_artifact_file_reconstructs_exactly_what_the_quantizer_intended(mod, tmp_path):
    args, model = tiny_state(mod, quant_bits_mlp=5)
    state = model.state_dict()
    x = torch.randint(0, 64, (4, 16))
    hs = mod.collect_hessians(model, [(x, x)])
    intended = mod.dequantize_state(mod.quantize_state(state, args, hs)[0])
    for codec in [c for c in mod.CODECS if {"zstd": mod.zstandard, "brotli": mod.brotli}.get(c, 1)]:
        for layout in mod.LAYOUTS:
            a = args.replace(compressor=codec, quant_layout=layout, compress_chunk=1000)
            path = tmp_path / f"{codec}_{layout}.ptz"
            s = mod.export_artifact(state, a, str(path), mod.Runtime(), hs)
            assert (s["compressor"], s["layout"], s["artifact_bytes"]) == (codec, layout, path.stat().st_size)
            cfg, back, got = mod.load_artifact(str(path), "cpu")
            assert got == codec and cfg["num_layers"] == 3 and set(back) == set(state)
            for k in state:
                assert back[k].dtype == torch.float32 and torch.equal(back[k], intended[k]), (codec, layout, k)
    bits = mod.quantize_state(state, args)[0]["bits"]
    assert bits["blocks.0.mlp.fc.weight"] == 5 and bits["blocks.0.attn.c_q.weight"] == 6
    assert bits["tok_emb.weight"] == 8


def installed_codecs(mod):
    return [c for c in mod.CODECS if {"zstd": mod.zstandard, "brotli": mod.brotli}.get(c, 1)]


def test_auto_keeps_the_smallest_encoding(mod, tmp_path):
    args, model = tiny_state(mod)  # one chunk per candidate: the sample is the whole payload, every size is full
    s = mod.export_artifact(model.state_dict(), args, str(tmp_path / "m.ptz"), mod.Runtime())
    sizes = {k: e["bytes"] for k, e in s["encodings"].items()}
    assert all(e["full"] and e["chunks"] == e["sampled"] == 1 for e in s["encodings"].values())
    assert s["artifact_bytes"] == min(sizes.values()) == sizes[f"{s['compressor']}/{s['layout']}"]
    assert len(s["encodings"]) == len(mod.LAYOUTS) * len(installed_codecs(mod))
    g = s["groups"]
    assert set(g) == {"attn", "mlp", "embed", "control", "matrix"}
    assert g["attn"]["bits"] == 6 and g["embed"]["bits"] == 8 and g["control"]["bits"] == 32
    assert sum(v["params"] for v in g.values()) == sum(p.numel() for p in model.state_dict().values())


def full_sizes(mod, state, args) -> dict[str, int]:
    """Every candidate encoding compressed in full, as the exhaustive choice did."""
    payload, meta = mod.quantize_state(state, args)[0], mod.artifact_meta(args)
    return {
        f"{c}/{lay}": len(mod.encode(payload, meta, c, lay, args)) for c in installed_codecs(mod) for lay in mod.LAYOUTS
    }


def test_every_layout_is_sampled_at_the_same_weights(mod):
    args, model = tiny_state(mod)
    payload, meta = mod.quantize_state(model.state_dict(), args)[0], mod.artifact_meta(args)
    raws = {lay: mod.serialize(payload, meta, lay) for lay in mod.LAYOUTS}
    picks = mod.aligned_samples(raws, 200, 6)
    assert picks["plain"] == picks["shuffle"] == mod.sample_chunks(-(-len(raws["plain"]) // 200), 6)
    assert picks["packed"] == picks["packed_shuffle"] != picks["plain"]
    assert picks["packed"][0] == 0 and picks["packed"][-1] == -(-len(raws["packed"]) // 200) - 1
    spans = {lay: mod.payload_spans(raw) for lay, raw in raws.items()}
    assert [n for _, n in spans["plain"][1:]] == [
        e[5] for e in json.loads(raws["plain"][4:][: spans["plain"][0][1] - 4])["tensors"]
    ]
    for i, j in zip(picks["plain"][1:-1], picks["packed"][1:-1], strict=True):  # the same tensor in the middle
        at = lambda lay, c: max(e for e, (start, _) in enumerate(spans[lay]) if start <= c * 200 + 100)
        assert at("plain", i) == at("packed", j)
    assert mod.aligned_samples(raws, 200, 0) == {lay: list(range(-(-len(r) // 200))) for lay, r in raws.items()}


def test_sample_chunks_are_evenly_spread_and_all_when_few(mod):
    assert mod.sample_chunks(27, 4) == [0, 7, 19, 26]  # the first and last, and the middles of two equal parts
    assert mod.sample_chunks(8, 5) == [0, 2, 4, 6, 7] and mod.sample_chunks(10, 2) == [0, 9]
    assert mod.sample_chunks(3, 4) == mod.sample_chunks(3, 0) == mod.sample_chunks(3, 3) == [0, 1, 2]
    for n in range(6, 60):
        picks = mod.sample_chunks(n, 5)
        assert len(set(picks)) == 5 and picks == sorted(picks) and picks[0] == 0 and picks[-1] == n - 1


def test_the_sampled_choice_keeps_the_smallest_full_encoding_and_says_which_sizes_are_estimates(mod, tmp_path, capsys):
    args, model = tiny_state(mod, compress_chunk=512, encode_sample_chunks=12)  # about 75 chunks per candidate
    state = model.state_dict()
    s = mod.export_artifact(state, args, str(tmp_path / "m.ptz"), mod.Runtime())
    log = capsys.readouterr().out
    truth = full_sizes(mod, state, args)
    chosen = f"{s['compressor']}/{s['layout']}"
    full = {k: e["bytes"] for k, e in s["encodings"].items() if e["full"]}
    estimated = {k: e["bytes"] for k, e in s["encodings"].items() if not e["full"]}
    assert set(full) | set(estimated) == set(truth) and estimated and chosen in full
    assert all(full[k] == truth[k] for k in full)  # what the summary calls full is the real size
    assert all(1 <= e["sampled"] <= 12 < e["chunks"] for k, e in s["encodings"].items() if k in estimated)
    assert s["artifact_bytes"] == (tmp_path / "m.ptz").stat().st_size == truth[chosen] == min(full.values())
    # what was not encoded in full was estimated more than the margin above the choice's estimate; the log says so
    mine = s["encodings"][chosen]["estimate"]
    assert all(n > mine * (1 + mod.ENCODE_MARGIN) for n in estimated.values())
    assert all(e["estimate"] == e["bytes"] for e in s["encodings"].values() if not e["full"])
    line = next(x for x in log.splitlines() if x.startswith("encoding_choice:"))
    assert (
        f"{chosen} {truth[chosen]} bytes (the smallest of {len(full)} encoded in full; {len(estimated)} others" in line
    )
    assert f"more than 0.5% above its estimate ~{mine})" in line and "estimate_error:" in line
    shown = next(x for x in log.splitlines() if x.startswith("encodings:")).split()[1:]
    assert sorted(shown) == sorted([f"{k}:{n}" for k, n in full.items()] + [f"{k}:~{n}" for k, n in estimated.items()])
    # the loss against the exhaustive choice: within the margin here (estimates from 12 chunks of each payload)
    assert truth[chosen] <= min(truth.values()) * (1 + mod.ENCODE_MARGIN)


def test_the_sampled_choice_gives_the_same_bytes_with_any_number_of_threads(mod, tmp_path, monkeypatch):
    args, model = tiny_state(mod, compress_chunk=256, encode_sample_chunks=6)
    state, blobs = model.state_dict(), []
    for threads in (1, 3):
        monkeypatch.setattr(mod.os, "cpu_count", lambda n=threads: n)
        s = mod.export_artifact(state, args, str(tmp_path / f"{threads}.ptz"), mod.Runtime())
        blobs.append(((tmp_path / f"{threads}.ptz").read_bytes(), s["encodings"]))
    assert blobs[0] == blobs[1]
    payload = mod.quantize_state(state, args)[0]
    assert blobs[0][0] == mod.encode(payload, mod.artifact_meta(args), s["compressor"], s["layout"], args)


def test_sample_chunks_zero_is_the_exhaustive_choice(mod, tmp_path):
    args, model = tiny_state(mod, compress_chunk=2048, encode_sample_chunks=0)
    s = mod.export_artifact(model.state_dict(), args, str(tmp_path / "m.ptz"), mod.Runtime())
    truth = full_sizes(mod, model.state_dict(), args)
    assert {k: e["bytes"] for k, e in s["encodings"].items()} == truth
    assert all(e["full"] for e in s["encodings"].values())
    assert s["artifact_bytes"] == min(truth.values())
    assert f"{s['compressor']}/{s['layout']}" == min(truth, key=lambda k: (truth[k], list(truth).index(k)))


def test_the_export_compresses_nothing_beyond_the_encoding_choice(mod, tmp_path, monkeypatch):
    """The per-group size report used to compress every group alone again: one more full encoding of the model (74 s
    of a 232 s export on 2 cores, seconds per seed on the pod's critical path). The report keeps the groups' tensors,
    params and bits; the artifact is the choice's own chunks."""
    args, model = tiny_state(mod, compress_chunk=700, encode_sample_chunks=0)
    state = model.state_dict()
    real, calls = mod.compress_chunk, []
    monkeypatch.setattr(mod, "compress_chunk", lambda c, *a: calls.append(1) or real(c, *a))
    s = mod.export_artifact(state, args, str(tmp_path / "m.ptz"), mod.Runtime())
    n_export = len(calls)
    calls.clear()
    payload, groups = mod.quantize_state(state, args)
    blob = mod.choose_encoding(
        payload, mod.artifact_meta(args), installed_codecs(mod), list(mod.LAYOUTS), args, mod.Runtime()
    )[2]
    assert n_export == len(calls) and (tmp_path / "m.ptz").read_bytes() == blob
    assert s["groups"]["mlp"] == {
        "tensors": 6,
        "params": sum(state[n].numel() for n in groups if groups[n] == "mlp"),
        "bits": 6,
    }


@pytest.mark.parametrize("bits", range(2, 9))
def test_bit_packing_round_trips(mod, bits):
    qmax = 2 ** (bits - 1) - 1
    q = torch.randint(-qmax, qmax + 1, (1001,), dtype=torch.int8).numpy()
    raw = mod.pack_bits(q, bits)
    assert len(raw) == (1001 * bits + 7) // 8
    assert (mod.unpack_bits(raw, bits, 1001) == q).all()


def test_clip_search_never_worse_than_absmax(mod):
    torch.manual_seed(0)
    w = torch.distributions.StudentT(3.0).sample((64, 256)) * torch.rand(64, 1)
    for qmax in (15, 31, 127):
        errs = []
        for search in (False, True):
            s = mod.row_scales(w, qmax, search=search)
            errs.append((w - (w / s).round().clamp(-qmax, qmax) * s).square().sum(1))
        assert torch.all(errs[1] <= errs[0])
        if qmax == 15:
            assert errs[1].sum() < 0.99 * errs[0].sum()  # heavy tails at int5: clipping helps


def test_gptq_reduces_output_error_on_correlated_inputs(mod):
    torch.manual_seed(0)
    n, d_in, d_out = 4096, 128, 64
    mix = torch.randn(d_in, d_in) / d_in**0.5 + torch.eye(d_in)
    X = torch.randn(n, 16) @ torch.randn(16, d_in) + 0.1 * torch.randn(n, d_in) @ mix  # low-rank + noise
    w = torch.randn(d_out, d_in) * 0.05
    H = X.T @ X / n
    qmax = 7  # int4: rounding error is large enough to matter
    s = mod.row_scales(w, qmax, H.diag()[None])
    naive = (w / s).round().clamp(-qmax, qmax) * s
    gptq = mod.gptq_quantize(w, H, s, qmax, block=32, damp=0.01).float() * s
    err = lambda wq: (X @ (wq - w).T).square().mean().item()
    assert err(gptq) < 0.5 * err(naive)


def test_collect_hessians_is_mean_input_outer_product(mod):
    args, model = tiny_state(mod)
    x = torch.randint(0, 64, (3, 16))
    seen = {}
    h = model.blocks[1].mlp.proj.register_forward_hook(lambda m, i, o: seen.update(x=i[0].reshape(-1, i[0].size(-1))))
    hs = mod.collect_hessians(model, [(x, x)])
    h.remove()
    assert "blocks.1.attn.c_k.weight" not in hs and "blocks.1.attn.c_q.weight" in hs
    assert mod.hessian_for("blocks.1.attn.c_v.weight", hs) is hs["blocks.1.attn.c_q.weight"]
    torch.testing.assert_close(hs["blocks.1.mlp.proj.weight"], seen["x"].T @ seen["x"] / x.numel())
    assert not model.blocks[1].mlp.proj._forward_hooks


def test_collect_hessians_sums_in_fp32_under_bf16_autocast(mod):
    args, model = tiny_state(mod)
    x = torch.randint(0, 64, (3, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the GPU path runs the forward under bf16 autocast
        hs = mod.collect_hessians(model, [(x, x), (x, x)])
    assert all(h.dtype == torch.float32 for h in hs.values())


def test_smallest_fit_equals_brute_force(mod):
    for threshold in (0.0, 0.0001, 0.013, 0.05, 0.0999, 0.1):
        calls = []
        fits = lambda f, t=threshold, c=calls: c.append(f) or f >= t
        grid = [k * 0.1 / 2**6 for k in range(2**6 + 1)]
        brute = next((f for f in grid if f >= threshold), None)
        assert mod.smallest_fit(fits, 0.1, steps=6) == brute
        assert len(calls) <= 8
    assert mod.smallest_fit(lambda f: f > 0.2, 0.1) is None


def test_prune_to_fit_finds_the_smallest_fraction_and_fails_clearly(mod, tmp_path):
    args, model = tiny_state(mod)
    args = args.replace(
        compressor="xz", quant_layout="plain", prune_max_frac=0.5, enforce_cap=True, quant_fit_mlp_bits=0
    )
    state, rt = model.state_dict(), mod.Runtime()
    code = (tmp_path / "code.py").write_bytes(b"#")
    code_file = str(tmp_path / "code.py")
    full = mod.export_artifact(state, args, str(tmp_path / "a.ptz"), rt, code_file=code_file)
    assert full["prune_frac"] == 0.0 and code == 1
    mod.ARTIFACT_CAP_BYTES = 1 + full["artifact_bytes"] - 300
    s = mod.export_artifact(state, args, str(tmp_path / "b.ptz"), rt, code_file=code_file)
    assert 0 < s["prune_frac"] <= 0.5 and s["bytes_total"] <= mod.ARTIFACT_CAP_BYTES
    payload = mod.quantize_state(state, args)[0]
    order = mod.prune_order(payload)
    meta = mod.artifact_meta(args)
    size = lambda f: 1 + len(mod.encode(mod.prune(payload, order, f), meta, "xz", "plain", args))
    assert size(s["prune_frac"]) == s["bytes_total"]
    assert size(s["prune_frac"] - 0.5 / 2**12) > mod.ARTIFACT_CAP_BYTES  # one grid step less does not fit
    _, back, _ = mod.load_artifact(str(tmp_path / "b.ptz"), "cpu")
    n_zero = sum(int((back[k] == 0).sum()) for k in payload["q"] if "emb" not in k)
    assert n_zero > sum(int((payload["q"][k] == 0).sum()) for k in payload["q"] if "emb" not in k)
    mod.ARTIFACT_CAP_BYTES = 1000
    with pytest.raises(SystemExit, match=r"over the cap even with PRUNE_MAX_FRAC=0.5.*code 1 \+ model"):
        mod.export_artifact(state, args, str(tmp_path / "c.ptz"), rt, code_file=code_file)
    assert not (tmp_path / "c.ptz").exists()


def test_over_the_cap_the_mlp_drops_to_quant_fit_mlp_bits_before_any_pruning(mod, tmp_path):
    args, model = tiny_state(mod)
    base = dict(compressor="xz", quant_layout="plain", prune_max_frac=0.0, enforce_cap=True)
    state, rt = model.state_dict(), mod.Runtime()
    code_file = str(tmp_path / "code.py")
    (tmp_path / "code.py").write_bytes(b"#")
    six = mod.export_artifact(state, args.replace(**dict(base, quant_fit_mlp_bits=0)), str(tmp_path / "6.ptz"), rt,
                              code_file=code_file)  # fmt: skip
    five_args = args.replace(**dict(base, quant_fit_mlp_bits=0, quant_bits_mlp=5))
    five = mod.export_artifact(state, five_args, str(tmp_path / "5.ptz"), rt, code_file=code_file)
    assert five["bytes_total"] < six["bytes_total"]
    mod.ARTIFACT_CAP_BYTES = five["bytes_total"]  # int6 MLP is over, int5 MLP fits exactly
    fit_args = args.replace(**dict(base, quant_fit_mlp_bits=5))
    fit = mod.export_artifact(state, fit_args, str(tmp_path / "f.ptz"), rt, code_file=code_file)
    assert fit["bytes_total"] == five["bytes_total"] and fit["prune_frac"] == 0.0
    assert (tmp_path / "f.ptz").read_bytes() == (tmp_path / "5.ptz").read_bytes()
    with pytest.raises(SystemExit, match="over the cap"):  # off: int6 MLP stays, and nothing may be pruned
        mod.export_artifact(state, args.replace(**dict(base, quant_fit_mlp_bits=0)), str(tmp_path / "n.ptz"), rt,
                            code_file=code_file)  # fmt: skip


def test_bad_artifacts_fail_naming_the_file_and_the_problem(mod, tmp_path):
    args, model = tiny_state(mod)
    args = args.replace(quant_layout="plain")
    good = tmp_path / "good.ptz"
    mod.export_artifact(model.state_dict(), args, str(good), mod.Runtime())
    blob = good.read_bytes()
    cases = {
        "truncated.ptz": (blob[: len(blob) // 2], "corrupted or truncated"),
        "short.ptz": (blob[:10], "corrupted or truncated"),
        "flipped.ptz": (blob[:-40] + bytes([blob[-40] ^ 0xFF]) + blob[-39:], "corrupted"),
        "junk.ptz": (b"not an artifact at all", "not a pgolf artifact"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SystemExit, match=f"{name}: .*{msg}"):
            mod.load_artifact(str(tmp_path / name), "cpu")
    with pytest.raises(SystemExit, match="missing.ptz: artifact not found"):
        mod.load_artifact(str(tmp_path / "missing.ptz"), "cpu")
    # another architecture: the artifact declares 4 layers but holds the tensors of 3
    other = args.replace(num_layers=4)
    state3 = model.state_dict()
    mod.export_artifact(state3, other, str(tmp_path / "other.ptz"), mod.Runtime())
    with pytest.raises(SystemExit, match="other.ptz: artifact does not match the architecture"):
        mod.model_from_artifact(str(tmp_path / "other.ptz"), args, mod.Runtime())
    wide = args.replace(model_dim=64)
    mod.export_artifact(state3, wide, str(tmp_path / "wide.ptz"), mod.Runtime())
    with pytest.raises(SystemExit, match="wide.ptz: artifact does not match the architecture"):
        mod.model_from_artifact(str(tmp_path / "wide.ptz"), args, mod.Runtime())


@pytest.mark.slow
def test_quant_gap_benchmark_on_a_tiny_checkpoint(tiny_data, tmp_path, monkeypatch):
    import importlib.util

    from conftest import REPO, TINY_MODEL_ENV, run_script

    run_script(["--stage", "train", "--checkpoint", str(tmp_path / "c.pt")], {"ITERATIONS": "3"}, tiny_data, tmp_path)
    env = {**TINY_MODEL_ENV, "VAL_FILES": tiny_data["val_glob"], "TOKENIZER_PATH": tiny_data["tokenizer_path"]}
    for k, v in {**env, "VAL_TOKENS_LIMIT": "2000"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("quant_gap", REPO / "benchmarks" / "quant_gap.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.gap(load_script(), str(tmp_path / "c.pt"), None, stride=64)
    pre, naive, ours = res["rows"]
    assert res["hessians"] == "checkpoint" and res["val_tokens"] == 2000
    assert naive["gptq"] is False and ours["gptq"] is True and naive["encoding"].endswith("/plain")
    for r in (naive, ours):
        assert r["total"] == r["model_bytes"] + r["code_bytes"] and r["fits"]
        assert r["val_bpb_gap"] == r["val_bpb"] - pre["val_bpb"] and abs(r["val_bpb_gap"]) < 0.05
        assert "sliding_val_bpb_gap" in r


def test_gptq_gives_the_same_codes_with_any_number_of_threads(mod):
    """At 512 columns float32 GPTQ rounded differently with 1 and 2 threads (the artifact's bytes depended on the
    machine); it runs in float64."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(1536, 512, generator=g) * 0.02, torch.randn(4096, 512, generator=g)
    h = x.T @ x / x.size(0)
    s = mod.row_scales(w, 31, h.diag()[None])
    threads = torch.get_num_threads()
    codes = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            codes.append(mod.gptq_quantize(w, h, s, 31, 128, 0.01))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(codes[0], codes[1])
