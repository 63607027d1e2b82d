"""The GAN dataset: path rules, conversions, float32 labels, standardisation, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ohlora_cli.errors import DataError
from ohlora_cli.gan.config import GanData
from ohlora_cli.gan.data import GanDataset, IndexStream, iter_batches, read_table, scan_images

from .conftest import write_dataset


def cfg(csv_path, **kw):
    return GanData(csv=str(csv_path), label_columns=["a", "b"], **kw)


def test_relative_paths_float32_labels_and_collate(tmp_path):
    csv_path = write_dataset(tmp_path / "d", n=10)
    table = read_table(cfg(csv_path))
    assert table.paths[0] == tmp_path / "d" / "img" / "0.png"
    assert table.labels.dtype == np.float32
    dataset = GanDataset(table, 8, cache_mb=0)
    image, labels = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
    assert labels.dtype == torch.float32
    images, labels = next(iter_batches(dataset, seed=0, start_step=0, global_batch=4))  # DataLoader collate
    assert images.shape == (4, 3, 8, 8) and labels.dtype == torch.float32


def test_images_converted_to_rgb_and_resized(tmp_path):
    csv_path = write_dataset(tmp_path / "d", n=4)
    Image.new("L", (20, 12), 200).save(tmp_path / "d" / "img" / "1.png")  # greyscale, wrong size
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "d" / "img" / "2.png")
    table = read_table(cfg(csv_path))
    assert scan_images(table, 8)["resized"] == 1
    dataset = GanDataset(table, 8)
    assert dataset.resized == 1
    assert dataset[1][0].shape == (3, 8, 8) and int(dataset[1][0].float().mean()) == 200
    assert dataset[2][0][:, 0, 0].tolist() == [10, 20, 30]


def test_standardisation(tmp_path):
    table = read_table(cfg(write_dataset(tmp_path / "d", n=30), standardize_labels=True))
    labels = GanDataset(table, 8).labels
    assert labels.dtype == torch.float32
    # float32 standardisation of 30 values: error ~1e-7, a hundred times under the tolerances
    assert torch.allclose(labels.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(labels.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert np.allclose(table.mean, table.labels.mean(0), atol=1e-5)


def test_bad_cell_names_file_row_and_column(tmp_path):
    csv_path = write_dataset(tmp_path / "d", n=5)
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",abc"
    lines[4] = lines[4].rsplit(",", 1)[0] + ",nan"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_table(cfg(csv_path))
    message = str(info.value)
    assert f"{csv_path}:4: column 'b': 'abc' is not a number" in message
    assert f"{csv_path}:5: column 'b': 'nan' is not finite" in message


def test_missing_column_lists_the_header(tmp_path):
    csv_path = write_dataset(tmp_path / "d", n=3)
    with pytest.raises(DataError, match=r"'c' \(from data.label_columns\) not in the header; the CSV has: img_path, a, b"):
        read_table(GanData(csv=str(csv_path), label_columns=["a", "c"]))


def test_absolute_paths_from_another_machine_and_image_root(tmp_path):
    csv_path = write_dataset(tmp_path / "d", n=3)
    text = csv_path.read_text().replace("img/", "C:\\Users\\me\\faces\\")
    csv_path.write_text(text)
    with pytest.raises(DataError) as info:
        read_table(cfg(csv_path))
    assert "3 of 3 image files are missing" in str(info.value)
    assert "data.image_root" in info.value.hint
    table = read_table(cfg(csv_path, image_root=str(tmp_path / "d" / "img")))
    assert table.paths[2] == tmp_path / "d" / "img" / "2.png"


def test_unreadable_image_names_row(tmp_path):
    csv_path = write_dataset(tmp_path / "d", n=3)
    (tmp_path / "d" / "img" / "1.png").write_bytes(b"not a png")
    table = read_table(cfg(csv_path))
    with pytest.raises(DataError, match=rf"{csv_path}:3: column 'img_path'"):
        scan_images(table, 8)


def test_index_stream_is_deterministic_and_split_by_rank():
    stream = IndexStream(10, seed=1)
    whole = stream.batch(3, 4)
    assert whole == IndexStream(10, seed=1).batch(3, 4)
    assert stream.batch(3, 4, rank=0, world=2) + stream.batch(3, 4, rank=1, world=2) == whole
    epoch = [i for step in range(5) for i in stream.batch(step, 2)]
    assert sorted(epoch) == list(range(10))  # every row once per epoch
