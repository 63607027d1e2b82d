"""Labelled grids: the label each row sweeps and the value of each column, drawn in margins."""

import numpy as np
import pytest
import torch
from PIL import Image

from ohlora_cli.gan.grid import save_grid, sweep_captions


@pytest.mark.parametrize("resolution", [16, 256])
def test_captions_sit_in_margins_and_leave_the_cells_alone(tmp_path, resolution):
    torch.manual_seed(0)
    images = torch.rand(2 * 2 * 5, 3, resolution, resolution) * 2 - 1
    plain = np.asarray(Image.open(save_grid(images, 4, 5, tmp_path / "plain.png")))
    rows, cols = sweep_captions(["brightness", "position"], 2, torch.linspace(-2, 2, 5))
    assert rows == ["brightness", "brightness", "position", "position"]
    assert cols == ["-2", "-1", "+0", "+1", "+2"]
    labelled = np.asarray(Image.open(save_grid(images, 4, 5, tmp_path / "labelled.png", row_captions=rows,
                                               col_captions=cols)))
    top = labelled.shape[0] - plain.shape[0]
    left = labelled.shape[1] - plain.shape[1]
    assert top > 0 and left > 0
    assert np.array_equal(labelled[top:, left:], plain)  # the cells are the same pixels

    cell = plain.shape[0] // 4
    margin = labelled[top:, :left].min(axis=2)  # the left margin, row by row
    ink = [(margin[i * cell:(i + 1) * cell] < 128).sum() for i in range(4)]
    assert all(count > 20 for count in ink)  # every row is captioned
    brightness, position = margin[:cell], margin[2 * cell:3 * cell]
    assert not np.array_equal(brightness, position)  # and with its own label
    assert np.array_equal(margin[:cell], margin[cell:2 * cell])
    header = labelled[:top, left:].min(axis=2)
    per_column = [(header[:, j * cell:(j + 1) * cell] < 128).sum() for j in range(5)]
    assert all(count > 5 for count in per_column)
    # beside 256 px cells the text is drawn at twice the size of the 16 px grid's
    text_height = int((np.asarray(margin) < 128).any(axis=1).sum() / 4)
    assert text_height >= (14 if resolution == 256 else 7)
