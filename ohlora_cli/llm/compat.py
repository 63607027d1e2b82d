"""Compatibility shim: trl's SFT loss head on the CPU.

trl 1.15's SFTTrainer computes every loss through ``trl.trainer.utils._ChunkedLogProbFunction``,
a Triton kernel. trl only falls back when Triton cannot be imported; on a Linux machine with
Triton installed but no GPU (Triton has no CPU driver), training fails with
"RuntimeError: 0 active drivers". Triton's interpreter (TRITON_INTERPRET=1) runs it, but about
a hundred times slower than plain torch.

For CPU runs we put in its place a plain-torch function with the same arguments and the same
outputs, whose gradient autograd derives. The test suite checks it against trl's own kernel
(run under the Triton interpreter). GPU runs keep trl's kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class TorchLogProb:
    """Drop-in for trl's ``ChunkedLogProbFunction.apply`` on the CPU (full logits, autograd backward).

    Returns ``(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1)`` per token; the
    optional ones are None unless named in ``outputs``.
    """

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")):
        z = F.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        log_z = torch.logsumexp(z, dim=-1)
        log_probs = z.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1) - log_z
        probs = torch.softmax(z, dim=-1)
        entropy = log_z - (probs * z).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq = torch.log((probs * probs).sum(-1)) if "log_sum_sq_probs" in outputs else None
            mean_logits = z.mean(-1) if "mean_logits" in outputs else None
            is_top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def use_torch_loss_head_on_cpu(device: torch.device) -> bool:
    """On the CPU, swap trl's Triton loss-head kernel for TorchLogProb. True when swapped."""
    if device.type != "cpu":
        return False
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return False
    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:
        return False  # an older trl, or Triton missing: trl computes the loss in torch already
    trl_utils._ChunkedLogProbFunction = TorchLogProb
    return True
