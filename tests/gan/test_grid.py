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


def test_raw_labels_are_swept_around_their_mean_in_sds():
    from ohlora_cli.gan.grid import sweep_labels

    labels = sweep_labels(2, 1, 5, center=[10.0, -3.0], scale=[2.0, 0.5]).reshape(2, 5, 2)
    assert labels[0, :, 0].tolist() == [6.0, 8.0, 10.0, 12.0, 14.0] and (labels[0, :, 1] == -3).all()
    assert labels[1, :, 1].tolist() == [-4.0, -3.5, -3.0, -2.5, -2.0] and (labels[1, :, 0] == 10).all()
    assert torch.equal(sweep_labels(2, 1, 5), sweep_labels(2, 1, 5, center=[0, 0], scale=[1, 1]))
    rows, cols = sweep_captions(["eyes", "pose"], 1, torch.linspace(-2, 2, 5), center=[10.0, -3.0], scale=[2.0, 0.5])
    assert rows == ["eyes (mean 10, sd 2)", "pose (mean -3, sd 0.5)"]
    assert cols == ["-2 sd", "-1 sd", "+0 sd", "+1 sd", "+2 sd"]
