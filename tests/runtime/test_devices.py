"""Precision selection: ``auto`` on simulated CUDA cards of compute capability 7.0 / 8.0 / 9.0, the
CPU, and what is refused where. The card is simulated by its capability, the rule's only input."""

import pytest
import torch

from ohlora_cli.errors import RecipeError
from ohlora_cli.runtime.devices import (
    autocast_dtype,
    bf16_supported,
    capability,
    choose_precision,
    precision_for,
    weights_dtype,
)

CARDS = {(7, 0): "V100", (7, 5): "T4", (8, 0): "A100", (8, 6): "RTX 3060", (9, 0): "H100"}


@pytest.fixture
def card(monkeypatch):
    """Make cuda:0 report a compute capability (torch.device objects need no GPU to exist)."""
    def simulate(cap):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
        return torch.device("cuda", 0)

    return simulate


@pytest.mark.parametrize(("cap", "expected"), [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                               ((8, 6), "bf16"), ((9, 0), "bf16")])
def test_auto_is_bf16_only_from_compute_capability_8(card, cap, expected):
    assert precision_for("auto", cap) == expected, CARDS[cap]
    device = card(cap)
    assert capability(device) == cap
    assert choose_precision("auto", device) == expected
    assert bf16_supported(device) is (expected == "bf16")


@pytest.mark.parametrize("cap", [(7, 0), (7, 5)])
def test_bf16_on_a_card_without_it_is_refused_with_the_key(card, cap):
    with pytest.raises(RecipeError, match=rf"train.precision: bf16, but this GPU \(compute capability {cap[0]}.{cap[1]}\)"):
        choose_precision("bf16", card(cap))
    assert choose_precision("fp16", card(cap)) == "fp16"  # asked for explicitly: the scaler's path
    assert choose_precision("fp32", card(cap)) == "fp32"


@pytest.mark.parametrize("cap", [(8, 0), (9, 0)])
def test_explicit_choices_are_kept_on_a_bf16_card(card, cap):
    for requested in ("bf16", "fp16", "fp32"):
        assert choose_precision(requested, card(cap)) == requested


def test_the_cpu_trains_in_fp32_and_refuses_half_precision():
    cpu = torch.device("cpu")
    assert capability(cpu) is None and not bf16_supported(cpu)
    assert choose_precision("auto", cpu) == "fp32" and choose_precision("fp32", cpu) == "fp32"
    for requested in ("bf16", "fp16"):
        with pytest.raises(RecipeError, match=f"model.x: {requested} needs a CUDA GPU"):
            choose_precision(requested, cpu, key="model.x")


def test_one_map_from_precision_to_dtypes():
    assert autocast_dtype("fp32") is None and weights_dtype("fp32") is torch.float32
    assert autocast_dtype("bf16") is weights_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp16") is weights_dtype("fp16") is torch.float16
