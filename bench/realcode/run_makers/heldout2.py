"""Makers for the heldout2 manifest (see __init__.py).

Every maker writes a few synthetic samples in the on-disk schema the script reads (nothing from
the upstream datasets, nothing copied from the repositories) and returns the arguments that keep
one epoch short. The number of samples is chosen so that an epoch lasts longer than the doctor's
``--steps``: a tensor accumulated over an epoch then outlives several step boundaries, as it does
in a real run.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAKERS: dict = {}


def maker(name: str):
    def register(fn):
        MAKERS[name] = fn
        return fn
    return register


def _rng(entry: dict) -> np.random.Generator:
    return np.random.default_rng(int(entry["commit"][:8], 16))


# --- torchvision MNIST (jostmey/NakedAttention) -----------------------------------------------

def _idx_file(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (big-endian dims after a magic of 0, 0, type 0x08 = ubyte, ndim),
    the format torchvision's MNIST reads from raw/ once the archive names without .gz exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, rng: np.random.Generator, n_train: int, n_test: int) -> None:
    raw = folder / "MNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx_file(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx_file(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))


@maker("nakedattention")
def nakedattention(root: Path, entry: dict) -> dict:
    # load_mnist keeps 5/6 of the training set, batch 16 with drop_last: 240 images -> 12 steps
    # per epoch, so e_train lives across every boundary of a short run. No arguments.
    write_mnist(root, _rng(entry), n_train=240, n_test=32)
    return {"cwd": root, "args": [], "env": {}}


# --- ImVisible (traffic-light CSV + photos) -----------------------------------------------------

# Packages a script needs that the shared environment lacks or has too new, installed with
# ``pip install --no-deps --target DIR ...`` outside it and put first on PYTHONPATH for the run.
# DIR ends in site-packages: the static analysis reads PYTHONPATH folders as the user's own code
# unless they are package folders, and reading sklearn or pandas as the script's code changes its
# verdicts.
OVERLAYS = {
    # pandas 3 removed the positional fallback of ``Series[int]`` on a labelled Series, which
    # ImVisible's dataset uses (``points[0]`` on a row slice): the script needs the pandas of its time
    "pandas2": ("/tmp/ohlora-bench-overlays/pandas2/site-packages", "pandas==2.3.3 pytz"),
    # BezierLaneNet reads pictures with OpenCV, logs with tensorboardX, plots with bezier
    "cv2": ("/tmp/ohlora-bench-overlays/cv2/site-packages", "opencv-python-headless tensorboardX bezier"),
    # CRU imports geotorch (CRUCell) and scikit-learn (the PhysioNet preprocessing, imported by
    # data_utils whatever the dataset); seaborn, small and pure, went into the shared environment
    "cru": ("/tmp/ohlora-bench-overlays/cru/site-packages", "scikit-learn joblib threadpoolctl narwhals geotorch"),
    # ParallelWaveGAN writes audio with soundfile and logs with tensorboardX
    "pwg": ("/tmp/ohlora-bench-overlays/pwg/site-packages", "soundfile tensorboardX"),
}


def _overlay_env(name: str, probe: str) -> dict:
    import os

    folder, packages = OVERLAYS[name]
    if not Path(folder, probe).is_dir():
        raise RuntimeError(f"missing overlay {folder}: pip install --no-deps --target {folder} {packages}")
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": folder + (os.pathsep + rest if rest else "")}


def _pandas2_env() -> dict:
    import pandas

    if int(pandas.__version__.split(".")[0]) < 3:
        return {}
    return _overlay_env("pandas2", "pandas")


def _jpeg(path: Path, rng: np.random.Generator, width: int, height: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    # a smooth random picture (small JPEG) rather than noise
    small = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3)).astype(np.uint8)
    Image.fromarray(small).resize((width, height)).save(path, quality=80)


@maker("imvisible")
def imvisible(root: Path, entry: dict) -> dict:
    # training.py reads its annotation CSVs and photos from the placeholder paths it ships with
    # (relative to Model/), BATCH_SIZE 32 and 800 epochs are constants. The dataset crops 768x576
    # out of 876x657 pictures (train and validation alike) and scales the midline points, given
    # in 4032x3024 coordinates. Four training photos: one step per epoch, and the per-epoch lists
    # (train_losses, ...) then carry one graph per step; one validation photo.
    rng = _rng(entry)
    base = root / "PATH" / "TO"
    for csv, images, n in (("TRAINING", "876x657", 4), ("VALIDATION", "768x576", 1)):
        rows = ["file,mode,x1,y1,x2,y2,block"]
        for i in range(n):
            name = f"light_{csv.lower()}_{i}.jpg"
            _jpeg(base / images / "IMAGES" / name, rng, 876, 657)
            x1, x2 = rng.integers(800, 3200, 2)
            y1, y2 = int(rng.integers(200, 1500)), int(rng.integers(1600, 3024))
            rows.append(f"{name},{int(rng.integers(0, 5))},{x1},{y1},{x2},{y2},not_blocked")
        (base / csv).mkdir(parents=True, exist_ok=True)
        (base / csv / "ANNOTATIONS").write_text("\n".join(rows) + "\n")
    return {"cwd": root, "args": [], "env": _pandas2_env()}


# --- Continuous Recurrent Units (pendulum interpolation .npz) ------------------------------------

@maker("cru")
def cru(root: Path, entry: dict) -> dict:
    # load_data looks for data/pendulum/pend_interpolation_ir<impute rate>.npz before generating
    # 2000 trajectories itself: uint8 24x24 pendulum frames [N, T, 24, 24, 1], the targets alike,
    # and a validity mask [N, T, 1]. 12 training sequences of 20 frames at batch 2: 6 steps per
    # epoch (the epoch sums of train_epoch outlive the run's boundaries).
    rng = _rng(entry)
    impute = 0.5
    arrays = {}
    for split, n in (("train", 12), ("test", 4)):
        frames = np.zeros((n, 20, 24, 24, 1), np.uint8)
        for i in range(n):
            for t in range(20):
                # a bright bar from the centre at a drifting angle: a pendulum-like picture
                angle = 0.3 * t + i
                for r in range(1, 11):
                    frames[i, t, int(12 + r * np.sin(angle)), int(12 + r * np.cos(angle)), 0] = 255
        valid = rng.random((n, 20, 1)) > impute
        valid[:, :5] = True
        targets = frames.copy()
        frames[~valid[..., 0]] = 0
        arrays.update({f"{split}_obs": frames, f"{split}_targets": targets, f"{split}_obs_valid": valid,
                       f"{split}_ts": np.tile(np.arange(20.0), (n, 1))})
    folder = root / "data" / "pendulum"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"pend_interpolation_ir{impute}.npz", **arrays)
    args = ["--dataset", "pendulum", "--task", "interpolation", "-lsd", "30", "--sample-rate", "0.5",
            "--impute-rate", str(impute), "--epochs", "2", "-b", "2", "--num-workers", "0"]
    # CRU.train makes ../results/... (relative to the working folder). Under the read-only view the
    # child's working folder still refers to the mount it had before the view was built, so a
    # relative path resolves on the read-only root even where its target is in the writable temp
    # folder (EROFS at lib/utils.py:107). Without the view the audit hook still guards the run and
    # ../results lands in the temp folder.
    env = {**_overlay_env("cru", "sklearn"), "OHLORA_DOCTOR_NO_VIEW": "1"}
    return {"cwd": root, "args": args, "env": env}


@maker("cru_regression")
def cru_regression(root: Path, entry: dict) -> dict:
    # The PR #4 head (entry 8) calls imput_loss.item() at lib/CRU.py:353, but for the pendulum's
    # Bernoulli output interpolation sets imput_loss = np.nan, a float: the README's interpolation
    # command crashes there after the first step. The regression task runs the same train_epoch
    # (epoch_ll at line 348) without the imputation metrics: data/pendulum/pend_regression.npz, the
    # frames [N, T, 24, 24, 1] uint8 and a 2-d target per frame (the bob's position).
    rng = _rng(entry)
    arrays = {}
    for split, n in (("train", 12), ("test", 4)):
        angles = rng.uniform(0, 2 * np.pi, (n, 1)) + 0.3 * np.arange(20)
        frames = np.zeros((n, 20, 24, 24, 1), np.uint8)
        for r in range(1, 11):
            rows = (12 + r * np.sin(angles)).astype(int)
            cols = (12 + r * np.cos(angles)).astype(int)
            for i in range(n):
                frames[i, np.arange(20), rows[i], cols[i], 0] = 255
        arrays.update({f"{split}_obs": frames,
                       f"{split}_targets": np.stack([np.sin(angles), np.cos(angles)], -1),
                       f"{split}_ts": np.tile(np.arange(20.0), (n, 1))})
    folder = root / "data" / "pendulum"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "pend_regression.npz", **arrays)
    args = ["--dataset", "pendulum", "--task", "regression", "-lsd", "30", "--sample-rate", "0.5",
            "--epochs", "2", "-b", "2", "--num-workers", "0"]
    env = {**_overlay_env("cru", "sklearn"), "OHLORA_DOCTOR_NO_VIEW": "1"}
    return {"cwd": root, "args": args, "env": env}


# --- neuralpredictor.pytorch (NAS-Bench-101 HDF5 + split .npz) ----------------------------------

@maker("neuralpredictor")
def neuralpredictor(root: Path, entry: dict) -> dict:
    # Nb101Dataset reads data/nasbench.hdf5 (what tools/nasbench_tfrecord_converter.py writes:
    # hash, num_vertices, trainable_parameters, adjacency [N,7,7] int8, operations [N,7] with op
    # codes -2..2, metrics [N, epochs, 3 seeds, time, (train, ?, val, test) accuracies] float32)
    # and data/train.npz (index arrays per split name). A quarter of the cells "blow up" (every
    # seed's accuracy below 0.2), as some NAS-Bench-101 cells do, so resample_acc's fallback runs:
    # under NumPy 2 (NEP 50) that fallback is the only path that still yields a float64 target.
    import h5py

    rng = _rng(entry)
    n = 40
    vertices = rng.integers(4, 8, n)
    adjacency = np.zeros((n, 7, 7), np.int8)
    operations = np.zeros((n, 7), np.int64)
    for i, v in enumerate(vertices):
        for a in range(v - 1):
            adjacency[i, a, a + 1] = 1
            adjacency[i, a, rng.integers(a + 1, v)] = 1
        operations[i, :v] = rng.integers(0, 3, v)
        operations[i, 0], operations[i, v - 1] = -1, -2
    metrics = rng.uniform(0.85, 0.95, (n, 4, 3, 2, 4)).astype(np.float32)
    metrics[::4, -1, :, -1, 2:] = 0.1
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "nasbench.hdf5", "w") as f:
        f["hash"] = np.array([f"{i:032x}".encode() for i in range(n)])
        f["num_vertices"] = vertices
        f["trainable_parameters"] = rng.integers(10_000, 1_000_000, n)
        f["adjacency"] = adjacency
        f["operations"] = operations
        f["metrics"] = metrics
    np.savez(folder / "train.npz", **{"172": rng.permutation(n)[:30]})
    args = ["--train_split", "172", "--eval_split", "all", "--epochs", "2", "--train_batch_size", "10"]
    return {"cwd": root, "args": args, "env": {}}


# --- BezierLaneNet (CULane lists, photos and .lines.txt) -----------------------------------------

@maker("bezierlanenet")
def bezierlanenet(root: Path, entry: dict) -> dict:
    # CULane(root) reads list/<split>.txt (one "/folder/name.jpg" per line, the leading slash cut)
    # and beside each picture a .lines.txt with one lane per line, "x y x y ..." in pixels of the
    # 1640x590 frame. 12 training pictures at batch 2 with drop_last: 6 steps per epoch, so the run
    # stops before the end-of-epoch visualisation (make_grid(range=...), a keyword torchvision has
    # since removed); one lane or more per picture (the padding branch), and one picture without
    # lanes (the random branch).
    rng = _rng(entry)
    data = root / "CULane"
    lists = data / "list"
    lists.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 12), ("val", 2), ("test", 2)):
        names = []
        for i in range(n):
            name = f"/driver_h2/{split}/{i:05d}.jpg"
            picture = data / name[1:]
            _jpeg(picture, rng, 820, 295)
            lanes = []
            for _ in range(0 if (split == "train" and i == 11) else int(rng.integers(1, 5))):
                ys = np.linspace(590, 250, int(rng.integers(8, 20)))
                xs = rng.uniform(100, 1500) + (ys - 590) * rng.uniform(-1.5, 1.5)
                lanes.append(" ".join(f"{x:.3f} {y:.0f}" for x, y in zip(xs, ys, strict=True)))
            picture.with_suffix(".lines.txt").write_text("\n".join(lanes) + ("\n" if lanes else ""))
            names.append(name)
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
    args = ["--data", str(data), "--log_name", "heldout2", "--pretrained_weight", str(root / "absent.pth"),
            "--input_size", "160", "64", "--batch_size", "2", "--num_workers", "0", "--epochs", "2"]
    env = _overlay_env("cv2", "cv2")
    # train.py passes verbose=True to ReduceLROnPlateau, a keyword PyTorch deprecated in 2.2 and
    # later removed: on the installed torch the script stops before its first step for a reason
    # unrelated to what it is labelled for. A sitecustomize (first on PYTHONPATH, for this run only)
    # gives the keyword back as the no-op it had become; the script itself is unchanged.
    compat = root / ".heldout2-compat"
    compat.mkdir(exist_ok=True)
    (compat / "sitecustomize.py").write_text(SCHEDULER_VERBOSE)
    env["PYTHONPATH"] = f"{compat}:{env['PYTHONPATH']}"
    return {"cwd": root, "args": args, "env": env}


SCHEDULER_VERBOSE = """\
import inspect

import torch.optim.lr_scheduler as _schedulers

_init = _schedulers.ReduceLROnPlateau.__init__
if "verbose" not in inspect.signature(_init).parameters:
    def _accept_verbose(self, *args, verbose=None, **kwargs):
        _init(self, *args, **kwargs)

    _schedulers.ReduceLROnPlateau.__init__ = _accept_verbose
"""


# --- ParallelWaveGAN (dump folders of HDF5 utterances + a training yaml) ------------------------

PWG_CONFIG = """\
sampling_rate: 16000
hop_size: 64
format: hdf5
generator_params:
  in_channels: 1
  out_channels: 1
  kernel_size: 3
  layers: 6
  stacks: 2
  residual_channels: 16
  gate_channels: 32
  skip_channels: 16
  aux_channels: 20
  aux_context_window: 2
  dropout: 0.0
  use_weight_norm: true
  upsample_net: ConvInUpsampleNetwork
  upsample_params:
    upsample_scales: [4, 4, 4]
discriminator_params:
  in_channels: 1
  out_channels: 1
  kernel_size: 3
  layers: 4
  conv_channels: 16
  nonlinear_activation: LeakyReLU
  nonlinear_activation_params:
    negative_slope: 0.2
  use_weight_norm: true
stft_loss_params:
  fft_sizes: [256, 128]
  hop_sizes: [32, 16]
  win_lengths: [128, 64]
  window: hann_window
lambda_adv: 4.0
batch_size: 2
batch_max_steps: 1024
pin_memory: false
num_workers: 0
remove_short_samples: true
generator_optimizer_params: {lr: 0.0001, eps: 1.0e-06, weight_decay: 0.0}
discriminator_optimizer_params: {lr: 0.00005, eps: 1.0e-06, weight_decay: 0.0}
generator_scheduler_params: {step_size: 200000, gamma: 0.5}
discriminator_scheduler_params: {step_size: 200000, gamma: 0.5}
generator_grad_norm: 10
discriminator_grad_norm: 1
discriminator_train_start_steps: 2
train_max_steps: 1000
save_interval_steps: 1000
eval_interval_steps: 2
log_interval_steps: 2
num_save_intermediate_results: 1
"""

# ParallelWaveGAN's STFT loss calls torch.stft(x, n_fft, hop, win, window) without return_complex,
# which torch 2 refuses for real input; the loss then reads the real and imaginary parts from the
# last dimension, what view_as_real of the complex result gives.
STFT_REAL = """\
import torch

_stft = torch.stft


def _stft_real_pair(input, *args, return_complex=None, **kwargs):
    if return_complex is None and not input.is_complex():
        return torch.view_as_real(_stft(input, *args, return_complex=True, **kwargs))
    return _stft(input, *args, return_complex=return_complex, **kwargs)


torch.stft = _stft_real_pair
"""


@maker("parallelwavegan")
def parallelwavegan(root: Path, entry: dict) -> dict:
    # A hand-written small training yaml (the repository's conf/*.yaml is not extracted; the keys
    # are the ones train.py reads) and dump folders of .h5 utterances with "wave" (float32 [T]) and
    # "feats" (float32 [T / hop, 20]). 6 training utterances at batch 2: 3 steps per epoch;
    # eval_interval_steps 2 so that the evaluation (the manifest's acceptable WARN) runs within the
    # first steps. The package is imported from the extracted folder, as the console entry would.
    # The output folder is a temp folder: the evaluation writes .wav files with soundfile, a native
    # writer the sandbox cannot redirect, so inside the protected extracted folder it fails.
    import tempfile

    import h5py

    rng = _rng(entry)
    for split, n in (("train", 6), ("dev", 2)):
        folder = root / "dump" / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            frames = 40
            t = np.arange(frames * 64) / 16000
            wave = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t)).astype(np.float32)
            with h5py.File(folder / f"utt{i:03d}.h5", "w") as f:
                f["wave"] = wave
                f["feats"] = rng.normal(0, 1, (frames, 20)).astype(np.float32)
    (root / "heldout2.yaml").write_text(PWG_CONFIG)
    compat = root / ".heldout2-compat"
    compat.mkdir(exist_ok=True)
    (compat / "sitecustomize.py").write_text(STFT_REAL)
    env = _overlay_env("pwg", "tensorboardX")
    env["PYTHONPATH"] = f"{compat}:{root}:{env['PYTHONPATH']}"
    args = ["--config", str(root / "heldout2.yaml"), "--train-dumpdir", str(root / "dump" / "train"),
            "--dev-dumpdir", str(root / "dump" / "dev"), "--outdir", tempfile.mkdtemp(prefix="heldout2-pwg-exp-")]
    return {"cwd": root, "args": args, "env": env}
