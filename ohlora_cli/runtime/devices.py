"""Device and precision choices, made honestly: bf16 only where the hardware really has it.

The rule itself is ``precision_for(requested, capability)``, a pure function of the card's compute
capability (None for the CPU), so it is tested on simulated cards; ``choose_precision`` asks the
device for its capability and applies it.
"""

from __future__ import annotations

import torch

from ..errors import RecipeError

NATIVE_BF16 = (8, 0)  # Ampere: the first compute capability with bf16 tensor cores


def resolve_device(requested: str, *, key: str = "train.device", local_rank: int = 0) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"{key}: cuda, but no CUDA GPU is visible", hint=f"Use --set {key}=cpu or auto.")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def use_cpu_threads(device: torch.device, threads: int | None) -> None:
    """``train.cpu_threads``: the torch threads of a run on the CPU (None: torch's default)."""
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)


def capability(device: torch.device) -> tuple[int, int] | None:
    """The compute capability ``(major, minor)`` of a CUDA device; None for any other device."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def bf16_supported(device: torch.device) -> bool:
    """Real bf16 (compute capability 8.0+), not the emulation torch.cuda.is_bf16_supported() allows."""
    cap = capability(device)
    return cap is not None and cap >= NATIVE_BF16


def precision_for(requested: str, cap: tuple[int, int] | None, *, key: str = "train.precision") -> str:
    """'fp32', 'bf16' or 'fp16' for ``requested`` (auto | fp32 | bf16 | fp16) on a card of compute
    capability ``cap`` (None: the CPU, which always trains in fp32). ``auto`` is bf16 where the card
    has native bf16 (8.0+) and fp16 with a loss scaler below; bf16 asked of an older card, or any
    half precision asked of the CPU, is a RecipeError naming ``key``."""
    if cap is None:
        if requested in ("bf16", "fp16"):
            raise RecipeError(f"{key}: {requested} needs a CUDA GPU; this run is on the CPU",
                              hint=f"Use --set {key}=auto (fp32 on CPU).")
        return "fp32"
    native = tuple(cap) >= NATIVE_BF16
    if requested == "auto":
        return "bf16" if native else "fp16"
    if requested == "bf16" and not native:
        raise RecipeError(f"{key}: bf16, but this GPU (compute capability {cap[0]}.{cap[1]}) has no native bf16",
                          hint=f"Use --set {key}=fp16 or auto.")
    return requested


def choose_precision(requested: str, device: torch.device, *, key: str = "train.precision") -> str:
    """Returns 'fp32', 'bf16' or 'fp16' for this device (``precision_for`` with its capability)."""
    return precision_for(requested, capability(device), key=key)


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the one map; fp32 is the default


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast runs in for ``precision``; None for fp32 (no autocast)."""
    return PRECISION_DTYPES.get(precision)


def weights_dtype(precision: str) -> torch.dtype:
    """The dtype to load a model's weights in for ``precision`` (float32 for fp32)."""
    return PRECISION_DTYPES.get(precision, torch.float32)
