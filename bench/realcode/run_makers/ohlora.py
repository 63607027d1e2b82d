"""Makers for the ohlora manifest (see __init__.py): what each Oh-LoRA seed state reads, made up.

- ``stylegan_v1`` / ``stylegan_v2``: a few 256 x 256 PNG faces (noise) and the property-score CSV
  (``img_no, img_path`` and the seven ``*_score`` columns, z-scored floats written with decimals, so
  that pandas reads float64 as it did the real file); the StyleGAN weights the script loads, built by
  importing the repository's own generator / discriminator classes from the extracted folder and
  saving their random initialisation with ``torch.save``. ``stylegan_v2`` also writes the
  property-score CNN's weights and sets the generator's level of detail from the run key ``lod``.
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


        IMWRITE_PNG_COMPRESSION = 16


        def imwrite(path, image, *args):
            """Stand-in: the image is not written."""
            return True


        def imencode(ext, img, params=None):
            """Stand-in: PNG bytes (PIL) of ``img`` clipped to uint8, as ``(ok, uint8 array)``."""
            import io

            import numpy as np
            from PIL import Image

            pixels = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            return True, np.frombuffer(buffer.getvalue(), dtype=np.uint8)


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


def build_weights(root: Path, code: str, standin_path: str, args: tuple = ()) -> None:
    """Run ``code`` in a fresh interpreter in ``root`` (the repository's own classes are imported
    from the extracted folder; nothing of it enters this project) to save random weights."""
    env = {**os.environ, "PYTHONPATH": _pythonpath(str(root), standin_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=root, env=env,
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

STYLEGAN_FINETUNE_V2_INPUTS = """
    import sys
    import torch
    import stylegan_modified.stylegan_generator as gen
    from stylegan_modified.stylegan_generator_v2_cnn import PropertyScoreCNN

    lod = float(sys.argv[1])
    torch.manual_seed(0)
    state = gen.StyleGANGenerator(resolution=256).state_dict()
    # the synthesis network's level of detail is a buffer: the script's load_state_dict carries it
    # into every generator it builds from this file (v1, restructured v1, StyleGAN-FineTune-v2)
    state["synthesis.lod"] = torch.tensor(lod)
    torch.save(state, "stylegan_modified/stylegan_gen_fine_tuned_v1.pth")
    # the property-score CNN the script loads before it would train one
    torch.save(PropertyScoreCNN().state_dict(), "stylegan_modified/stylegan_gen_fine_tuned_v2_cnn.pth")
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
    """run_stylegan_fine_tuning_v2.py (seed failure 2 and its fix): the v1 data (2 rows: with the
    CNN's weights present the script never iterates them), the fine-tuned v1 generator as a bare
    state dict with ``synthesis.lod`` set to the run key ``lod`` (0 = full 256 x 256 synthesis; 6 =
    the 4 x 4 block upsampled to 256 x 256: fewer synthesis layers run, the same code path, images of
    the same shape for the CNN), the property-score CNN's weights (so the script loads them instead of
    training the CNN to early stopping), and the global_common folder the entry's ``extra`` brings.
    No StyleGAN-FineTune-v2 weights: the script must train it, which is where failure 2 lives."""
    spec = entry.get("run", {})
    shim = standins(root.parent, ["torchinfo", "torchview", "cv2", "bs4", "sklearn", "sklearn.metrics",
                                  "sklearn.model_selection"])
    _stylegan_data(root, spec.get("rows", 2))
    (root / "stylegan_modified" / "stylegan_gen_fine_tuned_v2.pth").unlink(missing_ok=True)
    build_weights(root, STYLEGAN_FINETUNE_V2_INPUTS, shim, (spec.get("lod", 0),))
    return {"cwd": root.parent, "args": [], "env": {"PYTHONPATH": _pythonpath(shim)}}


# -- the LLM scripts -------------------------------------------------------------------------------

# The unsloth test scripts were written for trl 0.15 (2025). Two of its API facts are gone in the trl
# this project installs: ``trl.DataCollatorForCompletionOnlyLM`` (removed) and ``SFTConfig``'s bf16
# default (False then; True now, which raises on a CPU and on the author's pre-Ampere GPUs); and
# ``report_to=None``, which transformers 5 rejects (the sandbox disables the loggers anyway: "none");
# and the loss: trl 0.15's ``SFTTrainer.compute_loss`` was the Trainer's (the model's own loss from its
# labels), where trl 1.x computes it with a fused LM head whose Triton kernel needs a GPU driver (on a
# CPU: "0 active drivers"). The stand-in ``sitecustomize`` restores these once trl is imported, and
# nothing else: the batch the Trainer builds, its n_gpu and its DataParallel refusal are trl 1.x's own.
TRL_015 = '''
    """Stand-in written by bench/realcode/run_makers/ohlora.py: trl 0.15's API where the scripts need it."""
    import sys


    def _collator(trl):
        from transformers import DataCollatorForLanguageModeling

        class DataCollatorForCompletionOnlyLM(DataCollatorForLanguageModeling):
            """Labels only after the response template (as trl 0.15: an example without it is ignored)."""

            def __init__(self, response_template, tokenizer=None, mlm=False, ignore_index=-100, **kwargs):
                super().__init__(tokenizer=tokenizer, mlm=mlm, **kwargs)
                self.template = list(response_template)
                self.ignore_index = ignore_index

            def torch_call(self, examples):
                # trl 0.15's examples held the token ids only; trl 1.x adds its own fields
                examples = [{"input_ids": e["input_ids"]} for e in examples]
                batch = super().torch_call(examples)
                n = len(self.template)
                for row, ids in enumerate(batch["input_ids"].tolist()):
                    starts = [i for i in range(len(ids) - n + 1) if ids[i:i + n] == self.template]
                    cut = starts[0] + n if starts else len(ids)
                    batch["labels"][row, :cut] = self.ignore_index
                return batch

        trl.DataCollatorForCompletionOnlyLM = DataCollatorForCompletionOnlyLM


    def _bf16_default(module):
        config = module.SFTConfig
        real_init = config.__init__

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("bf16", False)
            if "report_to" in kwargs and kwargs["report_to"] is None:
                kwargs["report_to"] = "none"  # transformers 4.x took None (4.x: every installed logger)
            real_init(self, *args, **kwargs)

        config.__init__ = __init__


    def _plain_loss(module):
        from transformers import Trainer

        # trl 0.15: the loss is the model's own (labels in the inputs), computed by the Trainer
        module.SFTTrainer.compute_loss = Trainer.compute_loss


    PATCHES = {"trl": _collator, "trl.trainer.sft_config": _bf16_default, "trl.trainer.sft_trainer": _plain_loss}


    class _After:
        def find_spec(self, fullname, path=None, target=None):
            if fullname not in PATCHES:
                return None
            import importlib.util

            patch = PATCHES.pop(fullname)
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                if PATCHES:
                    sys.meta_path.insert(0, self)
            real_exec = spec.loader.exec_module

            def exec_module(module):
                real_exec(module)
                patch(sys.modules.get(fullname, module))  # a lazy package replaces itself in sys.modules

            spec.loader.exec_module = exec_module
            return spec


    sys.meta_path.insert(0, _After())
'''

WORDS = ["오늘", "날씨", "어때", "좋아", "나는", "너는", "로라", "뭐해", "같이", "산책", "가자", "고마워", "응", "그래",
         "hello", "today", "what", "do", "you", "like", "music", "coffee", "walk", "yes", "no", "thanks"]


def llm_csv(path: Path, train: int, valid: int) -> None:
    """``data_type, input_data, output_data, output_message, memory``: ``train`` rows then ``valid``."""
    import random

    rng = random.Random(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["data_type,input_data,output_data,output_message,memory"]
    for i in range(train + valid):
        ask = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        lines.append(f"{'train' if i < train else 'valid'},{ask},{answer},{answer},")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


TINY_GEMMA2 = """
    import json, sys
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    model_dir, tokenizer_dir, words = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    # Gemma's vocabulary size, so that the scripts' token ids (the response template) exist
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "###": 43774, "Answer": 10358, ":": 235292}
    for word in words:
        vocab.setdefault(word, 100 + len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=256000, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
                          pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = Gemma2ForCausalLM(config)
    # random weights never say EOS: answers of 2 new tokens keep the scripts' inference tests short
    # (generate() lets max_new_tokens win over the script's max_length)
    model.generation_config = GenerationConfig(max_new_tokens=2, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model.save_pretrained(model_dir)
    config.save_pretrained(tokenizer_dir)  # AutoTokenizer reads the repository's config.json too
    fast.save_pretrained(model_dir)
"""


def hf_cache_snapshot(hf_home: Path, repo_id: str) -> Path:
    """An offline Hugging Face cache entry for ``repo_id``: ``hub/models--A--B/{refs/main,snapshots/REV}``."""
    revision = "0" * 40
    base = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(revision, encoding="utf-8")
    snapshot = base / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def llm_unsloth_test(root: Path, entry: dict) -> dict:
    """llm/unsloth_test/test_without_unsloth.py (seed failure 3, its late variant and its fix): the
    fine-tuning CSV (150 train and 12 valid rows: the scripts read prompt 81 on and train rows
    120-140), a two-layer Gemma-2 with random weights in llm/models/original, the tokenizer for
    ``unsloth/gemma-2-2b-it`` in a cache under a temporary HF_HOME; run from the project folder."""
    import json

    project = root.parent.parent
    shim = Path(standins(project.parent, []))
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "sitecustomize.py").write_text(textwrap.dedent(TRL_015).lstrip(), encoding="utf-8")
    llm_csv(project / "llm" / "OhLoRA_fine_tuning.csv", 150, 12)
    hf_home = project.parent / "_hf_home"
    snapshot = hf_cache_snapshot(hf_home, "unsloth/gemma-2-2b-it")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(TINY_GEMMA2), str(project / "llm" / "models" /
                           "original"), str(snapshot), json.dumps(WORDS)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny Gemma-2 failed: {done.stderr[-2000:]}")
    return {"cwd": project, "args": [],
            "env": {"PYTHONPATH": _pythonpath(str(shim)), "HF_HOME": str(hf_home),
                    "HF_HUB_CACHE": str(hf_home / "hub"), "TOKENIZERS_PARALLELISM": "false"}}


MAKERS: dict = {"stylegan_v1": stylegan_v1, "stylegan_v2": stylegan_v2, "llm_unsloth_test": llm_unsloth_test}
