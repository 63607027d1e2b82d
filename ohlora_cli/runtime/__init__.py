"""Runtime helpers shared by the engines: atomic writes, seeding, devices, distributed."""

import logging

# torchao (pulled in by peft/transformers) registers Enum types with torch's pytree, and torch
# 2.14 logs a deprecation warning for each one on every run. It is not ours to fix or the
# user's to act on; keep it out of the output. Errors from that logger still show.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
