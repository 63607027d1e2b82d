"""Answer prompts with a model: greedy, under no_grad, stopping on the end marker.

Oh-LoRA's model rarely emitted EOS, so generation stops on the answer's end marker text
(transformers' ``stop_strings`` criterion); EOS ends it too. The model is put in eval mode for
the call and given back in the mode it was in; only detached token ids leave the function.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], *, end_marker: str | None,
                     max_new_tokens: int) -> list[dict]:
    """Returns ``[{"prompt", "answer", "new_tokens", "stopped"}]``; ``answer`` is cut before the end marker."""
    was_training = model.training
    model.eval()
    device = next(p.device for p in model.parameters())
    results = []
    try:
        for prompt in prompts:  # one at a time: no padding, so answers do not depend on batch mates
            encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
            kwargs = {"stop_strings": [end_marker], "tokenizer": tokenizer} if end_marker else {}
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                **kwargs,
            )
            new = output[0, encoded["input_ids"].shape[1]:].detach().cpu()
            text = tokenizer.decode(new, skip_special_tokens=True)
            stopped = "max_new_tokens"
            if end_marker and end_marker in text:
                text, stopped = text.split(end_marker, 1)[0], "end_marker"
            elif len(new) and tokenizer.eos_token_id is not None and int(new[-1]) == tokenizer.eos_token_id:
                stopped = "eos"
            results.append({"prompt": prompt, "answer": text.strip(), "new_tokens": int(len(new)),
                            "stopped": stopped})
    finally:
        model.train(was_training)
    return results
