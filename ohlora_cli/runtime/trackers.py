"""Experiment trackers, ``train.report_to``: TensorBoard (event files in ``output_dir/tb``) and
Weights & Biases (its local files in ``output_dir/wandb``).

``check_report_to`` runs while a run is planned (a dry run too): a tracker that is not installed
is bad input, exit 2, with the command that installs it. ``Trackers`` is what the GAN engine
writes to (rank 0, during training only: a dry run and the doctor open none); the LLM engine
hands the same names to the Trainer's own callbacks. torch, tensorboard and wandb are imported
only when a tracker is opened.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from ..errors import RecipeError

NAMES = ("tensorboard", "wandb")
INSTALL = {"tensorboard": "pip install 'ohlora-cli[tensorboard]'", "wandb": "pip install wandb"}
TB_DIR = "tb"


def check_report_to(report_to: list[str], *, key: str = "train.report_to") -> None:
    """Every tracker the recipe names is installed (found without importing it), else a RecipeError."""
    missing = [name for name in report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise RecipeError(
            f"{key}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed",
            hint=f"Install {'it' if len(missing) == 1 else 'them'} ({'; '.join(INSTALL[m] for m in missing)}), "
                 f"or leave {', '.join(missing)} out of {key}.",
        )


def scalar_values(record: dict) -> dict[str, float]:
    """The numbers of a stats line worth plotting: finite ints and floats, not bools or the step."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "step" and math.isfinite(v)}


class Trackers:
    """The trackers of one run (open on rank 0 only). Every call is flushed, so what a crashed or
    interrupted run logged is on disk."""

    def __init__(self, names: list[str], out_dir: str | os.PathLike, *, run_name: str, config: dict | None = None):
        self.writer = None
        self.wandb = None
        out_dir = Path(out_dir)
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / TB_DIR))
        if "wandb" in names:
            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "ohlora"), name=run_name,
                                    dir=str(out_dir), config=config or {})

    def scalars(self, record: dict, step: int) -> None:
        values = scalar_values(record)
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()
        if self.wandb is not None and values:
            self.wandb.log(values, step=step)

    def image(self, tag: str, path: str | os.PathLike, step: int) -> None:
        """A PNG the run wrote (a grid, a label-control plot), as it is on disk."""
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        if self.writer is not None:
            self.writer.add_image(tag, pixels, step, dataformats="HWC")
            self.writer.flush()
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(pixels)}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
