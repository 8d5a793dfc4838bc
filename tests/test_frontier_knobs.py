"""The frontier's cheap wins, each behind a knob that is off by default (issue 28): LeakyReLU(0.5)^2 (RELU_SLOPE),
parallel residuals (PARALLEL_RESIDUAL, on by default since 2026-11-24), depth recurrence (RECUR_LAYERS), Polar
Express Newton-Schulz (MUON_POLAR_EXPRESS); int7 embeddings are QUANT_BITS_EMBED=7 (tests/test_faults.py). For each:
the model builds, a training step runs on CPU, the loss stays finite and the knob changes what is computed."""

from __future__ import annotations

import pytest
import torch
from test_train_script import small_args

KNOBS = {
    "relu_slope": (0.0, 0.5),
    "parallel_residual": (True, False),
    "recur_layers": ("", "1"),
    "muon_polar_express": (False, True),
}


def one_step(mod, **over):
    """(logits before, loss before, loss after one optimizer step, parameters after) of a seeded small model."""
    args = small_args(mod, **over)
    torch.manual_seed(0)
    model = mod.GPT(args)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, args.vocab_size, (4, args.train_seq_len), generator=g)
    y = torch.randint(0, args.vocab_size, (4, args.train_seq_len), generator=g)
    logits = model.logits(x).detach()
    assert logits.shape == (4, args.train_seq_len, args.vocab_size)
    opts = mod.build_optimizers(model, args, mod.Runtime())
    loss = model(x, y)
    loss.backward()
    for o in opts:
        o.step()
    with torch.no_grad():
        after = model(x, y)
    return logits, loss.item(), after.item(), [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", list(KNOBS))
def test_each_frontier_knob_builds_steps_and_changes_the_output(train_script, name):
    mod = train_script
    off, on = KNOBS[name]
    assert mod.Hyperparameters.__dataclass_fields__[name].default == off
    base = one_step(mod, **{name: off})
    got = one_step(mod, **{name: on})
    assert all(torch.isfinite(torch.tensor(v)) for v in got[1:3])
    if name == "muon_polar_express":  # an optimizer knob: the same model, another update
        assert torch.equal(base[0], got[0]) and base[1] == got[1]
        assert any(not torch.equal(a, b) for a, b in zip(base[3], got[3], strict=True))
    else:
        assert not torch.allclose(base[0], got[0]), f"{name}={on!r} did not change the logits"


def test_polar_express_orthogonalises_at_least_as_well(train_script):
    g = torch.randn(8, 64, 128, generator=torch.Generator().manual_seed(0))
    for polar in (False, True):
        s = torch.linalg.svdvals(train_script.newton_schulz5(g, 5, polar))
        assert s.min() > 0.3 and s.max() < 1.3, (polar, s.min(), s.max())
    plain = torch.linalg.svdvals(train_script.newton_schulz5(g, 5))
    polar = torch.linalg.svdvals(train_script.newton_schulz5(g, 5, True))
    assert (polar - 1).abs().mean() < (plain - 1).abs().mean()  # closer to the polar factor in 5 steps
