"""Mixed precision on the CPU: the GAN phases under bf16 autocast with R1 kept in fp32, the whole
training loop in bf16, the fp16 loss scaler's skip-on-inf logic, and the precision a run plans
on simulated CUDA cards (7.0 / 8.0 / 9.0) with the phases that follow from it."""

from __future__ import annotations

import json
import types

import pytest
import torch
from safetensors import safe_open

from ohlora_cli import recipes
from ohlora_cli.errors import RunFailed
from ohlora_cli.gan import checkpoint as ckpt
from ohlora_cli.gan import engine
from ohlora_cli.gan.loss import StyleGANLoss
from ohlora_cli.gan.methods import METHODS
from ohlora_cli.gan.networks import Discriminator

from .conftest import tiny_D, tiny_G, tiny_recipe

BF16, FP32 = torch.bfloat16, torch.float32
AMP = "autocast"


def phase_names(phases):
    return [(p.name, p.every) for p in phases]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("interval", [1, 4])
def test_every_precision_applies_r1(precision, interval):
    t = types.SimpleNamespace(r1_gamma=10.0, r1_interval=interval)
    names = phase_names(engine.adversarial_phases(t, precision))
    assert names[-1] == ("Gmain", 1)
    r1 = [(name, every) for name, every in names if name in ("Dboth", "Dreg")]
    assert len(r1) == 1, names  # R1 is never dropped, whatever the precision
    if r1[0][0] == "Dreg":
        assert r1[0][1] == interval and ("Dmain", 1) in names
    else:  # R1 in the same pass as the logistic loss: only when it runs every step
        assert interval == 1 and precision != "fp16"
    off = types.SimpleNamespace(r1_gamma=0.0, r1_interval=interval)
    assert phase_names(engine.adversarial_phases(off, precision)) == [("Dmain", 1), ("Gmain", 1)]


class DtypeLog:
    """Forward hooks, per call and in order: the dtype of D's logits, and whether G's synthesis ran
    under autocast (its convolutions then run in bf16; its output is fp32 all the same, because the
    fp32 bias added last promotes it)."""

    def __init__(self, G, D):
        self.calls: list[tuple[str, object]] = []
        self.handles = [D.register_forward_hook(lambda m, i, o: self.calls.append(("D", o.dtype))),
                        G.synthesis.register_forward_hook(
                            lambda m, i, o: self.calls.append(("G", AMP if torch.is_autocast_enabled("cpu") else None)))]

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def grads(net):
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_bf16_autocast_phases_keep_r1_in_fp32():
    torch.manual_seed(0)
    G, D = tiny_G(), tiny_D(label_projection=True)
    real = torch.rand(4, 3, 8, 8) * 2 - 1
    c = torch.randn(4, 2)
    z = torch.randn(4, 8)
    amp = StyleGANLoss(G, D, r1_gamma=1.0, r1_interval=4, style_mixing_prob=0.9, w_avg_beta=0.995, amp_dtype=BF16)
    full = StyleGANLoss(G, D, r1_gamma=1.0, r1_interval=4, style_mixing_prob=0.9, w_avg_beta=0.995)
    log = DtypeLog(G, D)

    def run(loss, phase):
        for net in (G, D):
            net.zero_grad(set_to_none=True)
        stats = loss.accumulate_gradients(phase, real, c, z, c, 1.0, lambda x: x.backward())
        return stats, log.take()

    stats, calls = run(amp, "Dmain")  # fakes and reals through D under autocast
    assert calls == [("G", AMP), ("D", BF16), ("D", BF16)]
    assert stats["d_loss"].dtype == FP32 and torch.isfinite(stats["d_loss"])

    stats, calls = run(amp, "Dreg")  # R1: D runs without autocast, in fp32
    assert calls == [("D", FP32)]
    assert stats["r1"].dtype == FP32 and torch.isfinite(stats["r1"]) and stats["r1"] > 0
    r1_amp, grads_amp = stats["r1"], grads(D)
    stats, _ = run(full, "Dreg")  # the same penalty, bit for bit, as a run without AMP
    assert torch.equal(stats["r1"], r1_amp)
    assert grads_amp.keys() == grads(D).keys() and all(torch.equal(grads_amp[k], grads(D)[k]) for k in grads_amp)

    stats, calls = run(amp, "Dboth")  # the fake pass in bf16, the reals (logistic + R1) in fp32
    assert calls == [("G", AMP), ("D", BF16), ("D", FP32)]
    assert {"d_loss", "r1"} <= stats.keys()

    stats, calls = run(amp, "Gmain")  # G and D under autocast; G's weights get fp32 gradients
    assert calls == [("G", AMP), ("D", BF16)]
    g_grads = grads(G)
    assert g_grads and all(g.dtype == FP32 and torch.isfinite(g).all() for g in g_grads.values())


@pytest.mark.parametrize("interval", [1, 2])
def test_the_training_loop_runs_in_bf16_on_the_cpu(tmp_path, interval):
    """The adversarial method through the engine with the context's precision set to bf16 (the
    CPU plans fp32 on its own): autocast in the D and G phases, R1 in fp32, finite losses, no
    skipped step, weights and optimizer state saved in fp32."""
    recipe = recipes.load(str(tiny_recipe(tmp_path, extra=f"r1_interval: {interval}\n")), expect_kind="gan")
    ctx = engine.plan_run(recipe, resume=False)
    assert ctx.precision == "fp32"
    ctx.precision = "bf16"
    assert ctx.amp_dtype is BF16 and not engine.make_scaler(ctx.precision).is_enabled()
    engine.build_data(ctx, dry_run=False)
    engine.read_data(ctx, dry_run=False)
    engine.open_run(ctx)
    seen: list[torch.dtype] = []

    def hook(module, args, output):
        if isinstance(module, Discriminator):
            seen.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        METHODS["adversarial"](ctx)
    finally:
        handle.remove()
    # 8 steps. interval 1 (Dboth): fakes in bf16, reals with R1 in fp32, G's pass in bf16.
    # interval 2 (Dmain + Dreg): fakes and reals in bf16, G's pass in bf16, R1 every 2nd step in fp32.
    assert seen.count(FP32) == 8 // interval, seen
    assert seen.count(BF16) == (16 if interval == 1 else 24) and len(seen) == seen.count(FP32) + seen.count(BF16)
    lines = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    ticks = [r for r in lines if "d_loss" in r]
    assert ticks and all(r["skipped_steps"] == 0 for r in ticks)
    for key in ("d_loss", "g_loss", "r1"):
        assert all(r[key] is not None and abs(r[key]) < 1e6 for r in ticks), key
    path = ckpt.latest_checkpoint(tmp_path / "run")
    with safe_open(str(path), framework="pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys() if k.startswith(("G.", "D.", "opt_"))}
    assert dtypes <= {FP32, torch.int64}


def test_fp16_loss_scaler_skips_an_inf_step_and_backs_off():
    """step_optimizer with an enabled GradScaler (fp16's; built for the CPU here): gradients are
    unscaled before the step, a step with an Inf gradient is skipped with the scale halved, and the
    scale grows back after growth_interval good steps."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    assert scaler.is_enabled()

    def step(weights):
        scaler.scale((p * torch.tensor(weights)).sum()).backward()
        return engine.step_optimizer(opt, [p], distributed=False, scaler=scaler)

    assert step([1.0, 2.0, 3.0]) is True
    # a scale of 2**10 unscales exactly; one float32 multiply-add from the literals (an ulp)
    assert torch.allclose(p.detach(), torch.tensor([0.9, 0.8, 0.7])) and p.grad is None  # unscaled
    before = p.detach().clone()
    assert step([1.0, float("inf"), 3.0]) is False
    assert torch.equal(p.detach(), before) and p.grad is None
    assert scaler.get_scale() == 2.0**9
    assert step([1.0, 1.0, 1.0]) is True and step([1.0, 1.0, 1.0]) is True
    assert scaler.get_scale() == 2.0**10
    assert torch.allclose(p.detach(), before - 0.2)


@pytest.fixture
def card(monkeypatch):
    """One CUDA card of the given compute capability, as torch reports it (no CUDA call is made)."""
    def simulate(cap):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)

    return simulate


@pytest.mark.parametrize(("cap", "precision", "amp"), [((7, 0), "fp16", torch.float16), ((8, 0), "bf16", BF16),
                                                       ((9, 0), "bf16", BF16)])
def test_a_run_plans_its_precision_from_the_card(tmp_path, card, cap, precision, amp):
    card(cap)
    path = tiny_recipe(tmp_path, extra="device: auto\nprecision: auto\n")
    ctx = engine.plan_run(recipes.load(str(path), expect_kind="gan"), resume=False)
    assert (ctx.device.type, ctx.precision, ctx.amp_dtype) == ("cuda", precision, amp)
    names = [p.name for p in engine.adversarial_phases(ctx.recipe.train, ctx.precision)]
    assert "Dboth" in names or "Dreg" in names  # Oh-LoRA's R1 every step survives fp16 too


def _fp16_run(tmp_path, monkeypatch, *, init_scale: float, extra: str = ""):
    """The adversarial method with the context's precision set to fp16 and its loss scalers built for
    the CPU (ohlora refuses fp16 there and makes CUDA scalers), starting at ``init_scale``."""
    made: list[torch.amp.GradScaler] = []

    def cpu_scaler(precision):
        made.append(torch.amp.GradScaler("cpu", init_scale=init_scale, enabled=precision == "fp16"))
        return made[-1]

    monkeypatch.setattr(engine, "make_scaler", cpu_scaler)
    recipe = recipes.load(str(tiny_recipe(tmp_path, kimg=0.4, extra="max_nonfinite_steps: 5\n" + extra)),
                          expect_kind="gan")
    ctx = engine.plan_run(recipe, resume=False)
    ctx.precision = "fp16"
    engine.build_data(ctx, dry_run=False)
    engine.read_data(ctx, dry_run=False)
    engine.open_run(ctx)
    METHODS["adversarial"](ctx)
    return made, [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]


def test_fp16_scaler_backing_off_is_not_a_diverging_run(tmp_path, monkeypatch):
    """A loss scaler that starts far too high overflows the fp16 backward step after step while it
    halves towards a scale that fits: more skipped steps in a row than train.max_nonfinite_steps (5),
    and still a healthy run, which trains to the end once the scale fits."""
    scalers, lines = _fp16_run(tmp_path, monkeypatch, init_scale=2.0**40)
    assert len(scalers) == 2 and all(s.is_enabled() for s in scalers)
    skipped = sum(r["skipped_steps"] for r in lines if "skipped_steps" in r)
    assert skipped > 5, skipped  # the scaler had to back off for longer than the streak allows
    assert all(s.get_scale() < 2.0**30 for s in scalers)  # ... and it did
    ticks = [r for r in lines if "d_loss" in r]
    assert ticks[-1]["kimg"] == pytest.approx(0.4) and ticks[-1]["skipped_steps"] == 0
    assert lines[-1]["done"] is True


def test_fp16_gradients_that_stay_nan_still_stop_the_run(tmp_path, monkeypatch):
    """NaN gradients drive the scale below 1 (17 halvings from 2^16); from then on the streak counts."""
    original = StyleGANLoss.run_D
    monkeypatch.setattr(StyleGANLoss, "run_D",
                        lambda self, img, c, amp=True: original(self, img, c, amp=amp) * float("nan"))
    with pytest.raises(RunFailed, match="5 optimizer steps in a row had NaN/Inf gradients"):
        _fp16_run(tmp_path, monkeypatch, init_scale=2.0**16)
