"""StyleGAN losses behind one ``accumulate_gradients(phase, ...)`` (NVlabs' shape).

Non-saturating logistic loss (GenForce's softplus form), R1 on real images (every step, or lazily
every ``r1_interval`` steps with the penalty scaled by the interval), style mixing and ``w_avg``
tracking in ``run_G``. Phases: ``Gmain``, ``Dmain`` (logistic loss), ``Dreg`` (R1 alone),
``Dboth`` (both in one pass over the reals).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .networks import Discriminator, Generator


class StyleGANLoss:
    def __init__(self, G: Generator, D: Discriminator, *, r1_gamma: float, r1_interval: int,
                 style_mixing_prob: float, w_avg_beta: float, amp_dtype: torch.dtype | None = None,
                 distributed: bool = False):
        self.G, self.D = G, D
        self.r1_gamma, self.r1_interval = r1_gamma, r1_interval
        self.style_mixing_prob, self.w_avg_beta = style_mixing_prob, w_avg_beta
        self.amp_dtype, self.distributed = amp_dtype, distributed

    def autocast(self, device_type: str):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.amp_dtype)

    def track_w_avg(self, w: torch.Tensor) -> None:
        """GenForce's ``w_moving_decay``: ``w_avg <- lerp(w_avg, mean(w), 1 - beta)``, from a
        detached w (a grad-requiring w would chain every step's graph into the buffer)."""
        if self.w_avg_beta >= 1:
            return
        with torch.no_grad():
            batch_mean = w.detach().float().mean(dim=0)
            if self.distributed:
                torch.distributed.all_reduce(batch_mean)
                batch_mean /= torch.distributed.get_world_size()
            w_avg = self.G.truncation.w_avg
            w_avg.copy_(w_avg.lerp(batch_mean.to(w_avg.dtype), 1 - self.w_avg_beta))

    def run_G(self, z: torch.Tensor, c: torch.Tensor, *, update_w_avg: bool) -> torch.Tensor:
        G = self.G
        with self.autocast(z.device.type):
            w = G.mapping(z, c)
            if update_w_avg:
                self.track_w_avg(w)
            wp = G.truncation(w)
            if self.style_mixing_prob > 0 and float(torch.rand(())) < self.style_mixing_prob:
                cutoff = int(torch.randint(1, G.num_ws, ()))
                wp2 = G.truncation(G.mapping(torch.randn_like(z), c))
                wp = torch.cat([wp[:, :cutoff], wp2[:, cutoff:]], dim=1)
            return G.synthesis(wp, random_noise=True)

    def run_D(self, img: torch.Tensor, c: torch.Tensor, *, amp: bool = True) -> torch.Tensor:
        with self.autocast(img.device.type) if amp else contextlib.nullcontext():
            return self.D(img, c).float()

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor,
                             gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float, backward) -> dict:
        """Forward and ``backward(loss)`` for one phase; returns detached figures for the stats."""
        stats: dict[str, torch.Tensor] = {}
        if phase == "Gmain":
            logits = self.run_D(self.run_G(gen_z, gen_c, update_w_avg=True), gen_c)
            loss = F.softplus(-logits).mean()
            backward(loss * gain)
            stats["g_loss"] = loss.detach()
            return stats

        if phase in ("Dmain", "Dboth"):
            with torch.no_grad():
                gen_img = self.run_G(gen_z, gen_c, update_w_avg=False)
            logits_fake = self.run_D(gen_img, gen_c)
            loss_fake = F.softplus(logits_fake).mean()
            backward(loss_fake * gain)
            stats["fake_logits"] = logits_fake.detach()

        if phase in ("Dmain", "Dreg", "Dboth"):
            regularise = phase in ("Dreg", "Dboth") and self.r1_gamma > 0
            real = real_img.detach().requires_grad_(regularise)
            # R1 is computed in fp32 (no autocast): its double backward is fragile in half precision.
            logits_real = self.run_D(real, real_c, amp=not regularise)
            loss = torch.zeros((), device=real.device)
            if phase in ("Dmain", "Dboth"):
                loss_real = F.softplus(-logits_real).mean()
                loss = loss + loss_real
                stats["real_logits"] = logits_real.detach()
                stats["d_loss"] = loss_real.detach() + F.softplus(stats["fake_logits"]).mean()
            if regularise:
                (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
                r1 = grad.square().sum(dim=(1, 2, 3)).mean()
                interval = self.r1_interval if phase == "Dreg" else 1
                loss = loss + r1 * (self.r1_gamma / 2) * interval
                stats["r1"] = r1.detach()
            backward(loss * gain)
        return stats
