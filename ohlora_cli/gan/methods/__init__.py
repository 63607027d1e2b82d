"""The ``train.method`` of a GAN recipe, each in its own module over ``ohlora_cli.gan.engine``:

- ``adversarial`` (Oh-LoRA v1): D and G phases of the StyleGAN loss;
- ``property-regression`` (Oh-LoRA v2): G learns its labels from a frozen property-score CNN;
- ``scorer``: fit that property-score CNN on the recipe's images and labels.
"""

from __future__ import annotations

from collections.abc import Callable

from . import adversarial, regression, scorer

METHODS: dict[str, Callable] = {
    "adversarial": adversarial.train,
    "property-regression": regression.train,
    "scorer": scorer.train,
}
