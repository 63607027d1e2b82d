"""Makers for the ohlora manifest (see __init__.py): what each Oh-LoRA seed state reads, made up.

- ``stylegan_v1`` / ``stylegan_v2``: a few 256 x 256 PNG faces (noise) and the property-score CSV
  (``img_no, img_path`` and the seven ``*_score`` columns, z-scored floats written with decimals, so
  that pandas reads float64 as it did the real file); the StyleGAN weights the script loads, built by
  importing the repository's own generator / discriminator classes from the extracted folder and
  saving their random initialisation with ``torch.save``.
- ``vectorfind_v6``: the same, plus the files the VectorFind script reads at import.
- ``llm_unsloth_test``: the fine-tuning CSV, a tiny Gemma-2 model (random weights, built from a
  config) in ``llm/models/original``, and an offline tokenizer for ``unsloth/gemma-2-2b-it`` in a
  Hugging Face cache under a temporary ``HF_HOME``.

Stand-ins: the scripts import packages this project does not install (``torchinfo``, ``torchview``
for model-structure PDFs, ``cv2`` and ``bs4`` for image files and HTML pages, ``sklearn`` for AUROC
logs). Where one is not importable, the maker writes a stand-in module of that name into
``_standins/`` beside the extracted folder and puts it on ``PYTHONPATH``: none of them touches a
tensor the checks follow (they print, draw or save files). The scripts themselves are unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCORES = ["eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean", "background_std"]

STANDINS = {
    "torchinfo": '''
        def summary(model, *args, **kwargs):
            """Stand-in: prints the parameter count instead of the layer table."""
            n = sum(p.numel() for p in model.parameters())
            print(f"[torchinfo stand-in] {type(model).__name__}: {n} parameters")
    ''',
    "torchview": '''
        class _Graph:
            def render(self, *args, **kwargs):
                return None


        class _Drawn:
            visual_graph = _Graph()


        def draw_graph(*args, **kwargs):
            """Stand-in: no forward pass, no PDF."""
            return _Drawn()
    ''',
    "cv2": '''
        FONT_HERSHEY_TRIPLEX = 4
        LINE_8 = 8
        COLOR_BGR2RGB = 4
        COLOR_RGB2BGR = 4


        def imwrite(path, image, *args):
            """Stand-in: the image is not written."""
            return True


        def imread(path, *args):
            return None


        def resize(image, size, *args, **kwargs):
            import numpy as np

            h, w = size[1], size[0]
            ys = np.linspace(0, image.shape[0] - 1, h).astype(int)
            xs = np.linspace(0, image.shape[1] - 1, w).astype(int)
            return image[ys][:, xs]


        def putText(img=None, *args, **kwargs):
            return img


        def cvtColor(image, code):
            return image[..., ::-1]
    ''',
    "bs4": '''
        class BeautifulSoup:
            def __init__(self, *args, **kwargs):
                self.text = ""

            def prettify(self):
                return ""
    ''',
    "sklearn": "",
    "sklearn.metrics": '''
        def roc_auc_score(y_true, y_score, *args, **kwargs):
            """Stand-in: the Mann-Whitney form of AUROC."""
            pos = [s for t, s in zip(y_true, y_score) if t]
            neg = [s for t, s in zip(y_true, y_score) if not t]
            if not pos or not neg:
                return 0.5
            wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
            return wins / (len(pos) * len(neg))
    ''',
    "sklearn.model_selection": '''
        class KFold:
            def __init__(self, *args, **kwargs):
                pass


        StratifiedKFold = KFold
    ''',
}


def standins(base: Path, names: list[str]) -> str:
    """Stand-in modules for the ``names`` this interpreter cannot import, in ``base/_standins``;
    returns the folder (for PYTHONPATH)."""
    folder = base / "_standins"
    for name in names:
        top = name.split(".")[0]
        if importlib.util.find_spec(top) is not None:
            continue
        parts = name.split(".")
        if len(parts) == 1 and not any(other.startswith(name + ".") for other in STANDINS):
            path = folder / f"{name}.py"
        else:
            path = folder.joinpath(*parts) / "__init__.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(STANDINS[name]).lstrip(), encoding="utf-8")
    return str(folder)


def _pythonpath(*folders: str) -> str:
    return os.pathsep.join([*folders, *filter(None, [os.environ.get("PYTHONPATH")])])


def face_images(folder: Path, count: int, size: int = 256) -> list[Path]:
    """``count`` RGB PNGs of ``size`` x ``size`` (noise with a brighter oval: a face by courtesy)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    oval = ((yy - size / 2) / (size * 0.4)) ** 2 + ((xx - size / 2) / (size * 0.3)) ** 2 < 1
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        pixels[oval] += 100
        path = folder / f"{i:06d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def score_csv(path: Path, images: list[Path], columns: list[str]) -> None:
    """The property-score CSV: ``img_no, img_path`` and one ``<name>_score`` column per property,
    z-scored values with decimals (pandas reads float64 columns, ``.tolist()`` gives Python floats)."""
    import numpy as np

    rng = np.random.default_rng(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(["img_no", "img_path", *[f"{c}_score" for c in columns]])]
    for i, image in enumerate(images):
        values = [f"{v:.6f}" for v in rng.normal(0, 1, len(columns))]
        lines.append(",".join([str(i), str(image), *values]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_weights(root: Path, code: str, standin_path: str) -> None:
    """Run ``code`` in a fresh interpreter in ``root`` (the repository's own classes are imported
    from the extracted folder; nothing of it enters this project) to save random weights."""
    env = {**os.environ, "PYTHONPATH": _pythonpath(str(root), standin_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the weights failed in {root}: {done.stderr[-2000:]}")


STYLEGAN_PRETRAINED = """
    import torch
    import stylegan.stylegan_generator as gen
    import stylegan.stylegan_discriminator as dis

    torch.manual_seed(0)
    torch.save({"generator": gen.StyleGANGenerator(resolution=256).state_dict(),
                "discriminator": dis.StyleGANDiscriminator(resolution=256).state_dict()},
               "stylegan/stylegan_model.pth")
"""

STYLEGAN_FINETUNE_V1 = """
    import torch
    import stylegan_modified.stylegan_generator as gen

    torch.manual_seed(0)
    torch.save(gen.StyleGANGenerator(resolution=256).state_dict(),
               "stylegan_modified/stylegan_gen_fine_tuned_v1.pth")
"""


def _stylegan_data(root: Path, rows: int) -> None:
    images = face_images(root.parent / "_data" / "faces", rows)
    results = root / "segmentation" / "property_score_results"
    for name in ("all_scores.csv", "all_scores_v2.csv"):
        score_csv(results / name, images, SCORES)


def stylegan_v1(root: Path, entry: dict) -> dict:
    """run_stylegan_fine_tuning.py (seed failure 1 and its fix): 2 rows (one batch of 2 real
    images), GenForce-layout weights ``{"generator", "discriminator"}``; run from the project folder."""
    shim = standins(root.parent, ["torchinfo", "torchview", "cv2", "bs4", "sklearn", "sklearn.metrics",
                                  "sklearn.model_selection"])
    _stylegan_data(root, entry.get("run", {}).get("rows", 2))
    build_weights(root, STYLEGAN_PRETRAINED, shim)
    return {"cwd": root.parent, "args": [], "env": {"PYTHONPATH": _pythonpath(shim)}}


def stylegan_v2(root: Path, entry: dict) -> dict:
    """run_stylegan_fine_tuning_v2.py (seed failure 2 and its fix): the v1 data, the fine-tuned v1
    generator as a bare state dict, and the global_common folder the entry's ``extra`` brings."""
    shim = standins(root.parent, ["torchinfo", "torchview", "cv2", "bs4", "sklearn", "sklearn.metrics",
                                  "sklearn.model_selection"])
    _stylegan_data(root, entry.get("run", {}).get("rows", 2))
    build_weights(root, STYLEGAN_FINETUNE_V1, shim)
    return {"cwd": root.parent, "args": [], "env": {"PYTHONPATH": _pythonpath(shim)}}


MAKERS: dict = {"stylegan_v1": stylegan_v1, "stylegan_v2": stylegan_v2}
