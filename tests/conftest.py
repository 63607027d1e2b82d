"""The suite means the same thing on every machine of the project's kind (2 cores, no GPU), in a
terminal or not, whatever the CI environment holds: what would make it depend on the machine is
set here, once, before ohlora or a library is imported."""

import os

import pytest

# Tests never reach a model hub; keep libraries from trying (assigned: a CI value such as
# HF_HUB_OFFLINE=0 must not win).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# rich wraps its tables to the terminal's width (80 without a terminal, COLUMNS when set); tests look
# for phrases inside table rows, so every run draws them the same width, subprocesses included.
os.environ["COLUMNS"] = "200"
# Variables that change what ohlora or its libraries print: colour codes in captured output,
# library progress bars the log tests look for, tracebacks instead of messages.
for name in ("FORCE_COLOR", "PY_COLORS", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "OHLORA_DEBUG", "OHLORA_DOCTOR_NO_VIEW",
             "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
    os.environ.pop(name, None)
# One torch thread everywhere (subprocesses read OMP_NUM_THREADS): the tiny models gain nothing
# from more, and the trained figures the tests assert then do not depend on the core count.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Each test starts at one thread: a command run in-process with train.cpu_threads sets the
    process-wide count and does not restore it."""
    import torch

    torch.set_num_threads(1)
    yield
