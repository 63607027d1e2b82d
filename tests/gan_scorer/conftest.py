"""Shared, session-scoped runs on the synthetic blobs task (16 px, CPU): a dataset, a scorer trained
on it, and a weakly conditioned generator (a short adversarial run on shuffled labels)."""

import csv
import random

import pytest
from gan_recipes import write_gan_recipe

from ohlora_cli.commands.train_gan import run
from ohlora_cli.gan import synthetic

MODEL = dict(resolution=16, z_dim=32, w_dim=64, label_dim=8, mapping_layers=2, mapping_lr_mul=0.1,
             fmaps_base=512, fmaps_max=64, label_projection=True)
TRAIN = dict(batch_size=32, device="cpu", optimizer="adam", betas=[0.0, 0.99], lr_schedule="constant",
             g_lr=0.002, d_lr=0.002, r1_gamma=0.1, r1_interval=4, style_mixing_prob=0.5, ema_kimg=0.2,
             ema_rampup=0.05, g_trainable=["*"], d_trainable=["*"], log_kimg=0.5, snapshot_kimg=2,
             checkpoint_kimg=2)


def write_recipe(path, *, output_dir, csv_path, train, model=None, standardize=True):
    return str(write_gan_recipe(path, output_dir=output_dir, csv_path=csv_path,
                                label_columns=["brightness", "position"], model={**MODEL, **(model or {})},
                                train={**TRAIN, **train}, data={"standardize_labels": standardize}))


def train_gan(recipe_path, *overrides, resume=False):
    run(recipe_path, list(overrides), dry_run=False, resume=resume, skip_doctor=True, nproc=None)


@pytest.fixture(scope="session")
def blobs(tmp_path_factory):
    """600 blob images and two CSVs over them: true labels, and the labels shuffled across rows."""
    root = tmp_path_factory.mktemp("blobs") / "data"  # a builder builds only into a folder it creates
    synthetic.build_blobs(root / "labels.csv", count=600, resolution=16, seed=0)
    rows = list(csv.reader(open(root / "labels.csv", newline="")))
    labels = [row[1:] for row in rows[1:]]
    random.Random(1).shuffle(labels)
    with open(root / "shuffled.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(rows[0])
        for row, shuffled in zip(rows[1:], labels, strict=True):
            writer.writerow([row[0], *shuffled])
    return root


@pytest.fixture(scope="session")
def scorer_run(blobs, tmp_path_factory):
    """``train.method: scorer`` on the blobs; returns its output_dir."""
    root = tmp_path_factory.mktemp("scorer")
    recipe = write_recipe(root / "scorer.yaml", output_dir=root / "out", csv_path=blobs / "labels.csv",
                          standardize=False, train={
                              "method": "scorer",
                              "scorer": {"channels": 8, "hidden": 32, "epochs": 8, "patience": 3, "lr": 0.002},
                          })
    train_gan(recipe)
    return root / "out"


@pytest.fixture(scope="session")
def shuffled_run(blobs, scorer_run, tmp_path_factory):
    """A weakly conditioned generator: adversarial training on shuffled labels, with label control
    measured by the scorer (so this is also the adversarial method's label-control run)."""
    root = tmp_path_factory.mktemp("shuffled")
    recipe = write_recipe(root / "shuffled.yaml", output_dir=root / "out", csv_path=blobs / "shuffled.csv",
                          model={"scorer": str(scorer_run)},
                          train={"method": "adversarial", "kimg": 1,
                                 "label_control": {"every_kimg": 0.5, "steps": 5, "samples": 8}})
    train_gan(recipe)
    return root / "out"
