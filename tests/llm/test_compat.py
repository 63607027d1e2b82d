"""Our CPU loss head against trl's own Triton kernel, run under Triton's interpreter (no GPU needed)."""

import os
import subprocess
import sys
import textwrap

from bounds import HANG_S

SCRIPT = textwrap.dedent("""
    import torch
    from trl.trainer.utils import _ChunkedLogProbFunction as trl_kernel
    from ohlora_cli.llm.compat import TorchLogProb

    torch.manual_seed(0)
    outputs = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    for softcap, scale, temperature, with_bias in [(None, 1.0, 1.0, False), (30.0, 0.5, 0.7, True)]:
        hidden = torch.randn(7, 16, requires_grad=True)
        weight = torch.randn(50, 16, requires_grad=True)
        bias = torch.randn(50, requires_grad=True) if with_bias else None
        targets = torch.randint(0, 50, (7,))
        results = []
        for fn in (trl_kernel, TorchLogProb):
            out = fn.apply(hidden, weight, bias, targets, temperature, 32, softcap, scale, outputs)
            (out[0].sum() + 0.3 * out[1].sum()).backward()
            grads = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
            for t in (hidden, weight, bias):
                if t is not None:
                    t.grad = None
            results.append(([o.detach().float() for o in out], grads))
        (ours_out, ours_grads), (ref_out, ref_grads) = results[1], results[0]
        # two float32 implementations of one formula over 16 x 50: rounding ~1e-6, a hundred times under 1e-4
        for a, b in zip(ours_out, ref_out):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        for a, b in zip(ours_grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    print("MATCH")
""")


def test_torch_loss_head_matches_trls_kernel():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=HANG_S)
    assert "MATCH" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
