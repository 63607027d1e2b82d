"""``train.method: adversarial`` (Oh-LoRA v1): a conditional StyleGAN, non-saturating logistic loss
with R1, as phases over the engine's loop: D (R1 in the same pass, or lazily every ``r1_interval``
steps), then G, then up to ``extra_g_steps`` more G steps while ``g_loss >= extra_g_ratio x d_loss``.
"""

from __future__ import annotations

import torch

from .. import engine
from ..loss import StyleGANLoss


def train(ctx: engine.RunContext) -> None:
    t, device = ctx.recipe.train, ctx.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    nets = engine.setup_networks(ctx)
    label_pool = ctx.dataset.labels.to(device)
    loss = StyleGANLoss(nets.G, nets.D, r1_gamma=t.r1_gamma, r1_interval=t.r1_interval,
                        style_mixing_prob=t.style_mixing_prob, w_avg_beta=t.w_avg_beta, amp_dtype=ctx.amp_dtype,
                        distributed=ctx.env.distributed)
    hooks = engine.Hooks(
        title="train-gan",
        sample_labels=lambda n: label_pool[torch.randint(len(label_pool), (n,), device=device)],
        progress=lambda tick: f"D {tick.last('d_loss'):.3f}  G {tick.last('g_loss'):.3f}",
        figures=("d_loss", "g_loss", "r1"),
        extra_g=(t.extra_g_steps, t.extra_g_ratio),
        label_control=engine.label_control_hook(ctx, device),
    )
    engine.train_loop(ctx, nets, loss, engine.adversarial_phases(t, ctx.precision), hooks)
