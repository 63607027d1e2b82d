"""Device and precision choices, made honestly: bf16 only where the hardware really has it."""

from __future__ import annotations

import torch

from ..errors import RecipeError


def resolve_device(requested: str, *, key: str = "train.device", local_rank: int = 0) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"{key}: cuda, but no CUDA GPU is visible", hint=f"Use --set {key}=cpu or auto.")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Real bf16 (compute capability 8.0+), not the emulation torch.cuda.is_bf16_supported() allows."""
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def choose_precision(requested: str, device: torch.device, *, key: str = "train.precision") -> str:
    """Returns 'fp32', 'bf16' or 'fp16'. CPU always trains in fp32."""
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            raise RecipeError(f"{key}: {requested} needs a CUDA GPU; this run is on the CPU",
                              hint=f"Use --set {key}=auto (fp32 on CPU).")
        return "fp32"
    if requested == "auto":
        return "bf16" if bf16_supported(device) else "fp16"
    if requested == "bf16" and not bf16_supported(device):
        cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
        raise RecipeError(f"{key}: bf16, but this GPU (compute capability {cap}) has no native bf16",
                          hint=f"Use --set {key}=fp16 or auto.")
    return requested


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the one map; fp32 is the default


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast runs in for ``precision``; None for fp32 (no autocast)."""
    return PRECISION_DTYPES.get(precision)


def weights_dtype(precision: str) -> torch.dtype:
    """The dtype to load a model's weights in for ``precision`` (float32 for fp32)."""
    return PRECISION_DTYPES.get(precision, torch.float32)
