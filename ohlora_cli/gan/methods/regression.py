"""``train.method: property-regression`` (Oh-LoRA "v2"): the generator learns its labels from a
frozen property-score CNN instead of (or besides) a discriminator.

Each step samples z and requested labels (``normal``: N(mean, std) of the dataset's labels per
column; ``dataset``: rows of the dataset), generates images and minimises

    property_weight    * MSE(scorer(G(z, labels)), labels)        (in standardised units)
  + adversarial_weight * softplus(-D(G(z, labels), labels))       (D then trains as in adversarial)
  + keep_weight        * MSE(G(z, labels), G_start(z, labels))    (G_start: the starting generator)

The phases, freezing, optimizers, schedule, style mixing, ``w_avg`` tracking, EMA, grids,
checkpoints, ``--resume``, Ctrl-C and DDP are the engine's. The scorer is ``model.scorer`` (a
``train.method: scorer`` run); label control is measured with it every
``train.label_control.every_kimg`` and at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import RecipeError
from .. import engine
from ..loss import StyleGANLoss
from ..scorer import check_recipe, in_label_space, load_scorer, property_loss


class PropertyRegressionLoss(StyleGANLoss):
    """The StyleGAN loss, whose ``Gmain`` phase is the weighted sum above (D phases unchanged)."""

    def __init__(self, *args, score, label_std: torch.Tensor, weights, keep: StyleGANLoss | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.score, self.label_std, self.weights, self.keep = score, label_std, weights, keep

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, backward) -> dict:
        if phase != "Gmain":
            return super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, backward)
        w, terms = self.weights, {}
        reference = None
        if self.keep is not None:  # same style mixing and noise as G's pass: replayed from the same RNG state
            devices = [gen_z.device] if gen_z.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                reference = self.keep.run_G(gen_z, gen_c, update_w_avg=False)
        images = self.run_G(gen_z, gen_c, update_w_avg=True)
        with self.autocast(gen_z.device.type):
            terms["property_loss"] = property_loss(self.score, images, gen_c, self.label_std)
        total = w.property_weight * terms["property_loss"]
        if w.adversarial_weight > 0:
            terms["adv_loss"] = F.softplus(-self.run_D(images, gen_c)).mean()
            total = total + w.adversarial_weight * terms["adv_loss"]
        if reference is not None:
            terms["keep_loss"] = F.mse_loss(images.float(), reference.float())
            total = total + w.keep_weight * terms["keep_loss"]
        backward(total * gain)
        terms["g_loss"] = total
        return {k: v.detach() for k, v in terms.items()}


def train(ctx: engine.RunContext) -> None:
    r, t, reg, device = ctx.recipe, ctx.recipe.train, ctx.recipe.train.regression, ctx.device
    check_recipe(r)
    if reg.property_weight == 0 and reg.adversarial_weight == 0:
        raise RecipeError("train.regression: property_weight and adversarial_weight are both 0: nothing to learn")
    adversarial = reg.adversarial_weight > 0
    nets = engine.setup_networks(ctx, train_D=adversarial, keep_start=reg.keep_weight > 0)
    names, label_info = list(ctx.table.label_names), ctx.label_info
    score = in_label_space(load_scorer(r.model.scorer, device), names, label_mean=label_info["mean"],
                           label_std=label_info["std"])
    label_pool = ctx.dataset.labels.to(device)  # G's label space: standardised when asked
    pool_mean = label_pool.double().mean(0).float()
    pool_std = label_pool.double().std(0, unbiased=False).float().clamp(min=1e-12)
    common = {"r1_gamma": t.r1_gamma, "r1_interval": t.r1_interval, "style_mixing_prob": t.style_mixing_prob,
              "amp_dtype": ctx.amp_dtype}
    keep = None
    if nets.G_start is not None:
        keep = StyleGANLoss(nets.G_start, nets.D, **{**common, "r1_gamma": 0, "r1_interval": 1}, w_avg_beta=1.0)
    loss = PropertyRegressionLoss(nets.G, nets.D, **common, w_avg_beta=t.w_avg_beta, distributed=ctx.env.distributed,
                                  score=score, label_std=pool_std, weights=reg, keep=keep)

    def sample_labels(n: int) -> torch.Tensor:
        if reg.label_sampling == "dataset":
            return label_pool[torch.randint(len(label_pool), (n,), device=device)]
        return pool_mean + pool_std * torch.randn(n, len(names), device=device)

    hooks = engine.Hooks(
        title="property-regression",
        sample_labels=sample_labels,
        progress=lambda tick: f"prop {tick.last('property_loss'):.4f}",
        figures=("d_loss", "r1") if adversarial else (),
        label_control=engine.label_control_hook(ctx, device),
        nonfinite_hint="Lower train.g_lr, or use train.precision fp32.",
    )
    engine.train_loop(ctx, nets, loss, engine.adversarial_phases(t, ctx.precision, train_D=adversarial), hooks)
