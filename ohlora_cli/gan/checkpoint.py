"""Checkpoints: ours (one safetensors file) and GenForce's StyleGAN ``.pth`` files.

Ours: ``output_dir/checkpoints/checkpoint-<step>.safetensors``, written atomically (temporary
file, then rename). Tensors: ``G.*``, ``G_ema.*``, ``D.*`` (state dicts in GenForce's key
layout), ``opt_G.<i>.<key>`` / ``opt_D.<i>.<key>`` (optimizer state), ``rng.torch`` and
``rng.cuda.<i>``. The safetensors header metadata (JSON strings) holds the network configs,
counters, optimizer param groups, Python/NumPy RNG, label names and standardisation, loss-scaler
state and the resolved recipe. Nothing is ever unpickled.

GenForce (read with ``torch.load(weights_only=True)``): the model-zoo dict with top-level
``generator`` / ``generator_smooth`` (EMA) / ``discriminator``; a training checkpoint with the
same under ``models``; or a bare state dict of one network (how Oh-LoRA stored its fine-tuned
ones).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..console import warn
from ..errors import CheckpointError
from ..runtime.faults import os_error_of
from ..runtime.files import atomic_path
from ..runtime.run import CHECKPOINTS
from .networks import Discriminator, Generator, build_networks

FORMAT = "ohlora-gan-checkpoint"
NAME = re.compile(r"checkpoint-(\d+)\.safetensors$")


# ------------------------------------------------------------------------------ our format


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"checkpoint-{step:08d}.safetensors"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    folder = Path(output_dir) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*.safetensors") if (m := NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or for a run folder (an ``output_dir``) its latest checkpoint."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path}: a folder with no checkpoints/checkpoint-*.safetensors",
                              hint="Name a run's output_dir (after it saved a checkpoint) or a checkpoint file.")
    return found


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    if keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            old.unlink(missing_ok=True)


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state = opt.state_dict()
    extra = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra[f"{index}.{key}"] = value
    meta[prefix] = json.dumps({"param_groups": state["param_groups"], "extra": extra})


def optimizer_state(prefix: str, tensors: dict, meta: dict) -> dict:
    info = json.loads(meta[prefix])
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in info["extra"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = info["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])  # a list breaks Adam on torch >= 2.6
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | Path, *, G: Generator, G_ema: Generator, D: Discriminator,
                    opt_G: torch.optim.Optimizer | None, opt_D: torch.optim.Optimizer | None,
                    counters: dict, rng: dict | None, labels: dict, recipe_text: str = "",
                    scalers: dict | None = None) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, net in (("G", G), ("G_ema", G_ema), ("D", D)):
        for key, value in net.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous().clone()
    meta = {
        "format": FORMAT, "version": "1",
        "G_config": json.dumps(G.config), "D_config": json.dumps(D.config),
        "counters": json.dumps(counters), "labels": json.dumps(labels),
        "scalers": json.dumps(scalers or {}), "recipe": recipe_text,
    }
    for prefix, opt in (("opt_G", opt_G), ("opt_D", opt_D)):
        if opt is not None:
            optimizer_tensors(prefix, opt, tensors, meta)
    if rng is not None:
        tensors["rng.torch"] = rng["torch"]
        for i, state in enumerate(rng.get("cuda", [])):
            tensors[f"rng.cuda.{i}"] = state
        meta["rng"] = json.dumps({"python": rng["python"], "numpy": rng["numpy"]})
    needed = sum(t.numel() * t.element_size() for t in tensors.values()) + sum(map(len, meta.values()))
    try:
        with atomic_path(path) as tmp:
            try:
                save_file(tensors, str(tmp), metadata=meta)
            except SafetensorError as exc:  # an OS error (disk full, ...) rendered as text by the Rust side
                found = os_error_of(exc)
                if found is None:
                    raise
                raise OSError(found.errno, found.strerror, str(path)) from exc
    except OSError as exc:
        exc.needed_bytes = needed  # about the file's size: what a fault message says the write needed
        raise
    return Path(path)


class Checkpoint:
    """An opened checkpoint of ours: ``tensors`` (name -> tensor) and ``meta`` (decoded JSON)."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]):
        self.path, self.tensors, self.raw_meta = path, tensors, meta

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def json(self, key: str, default=None):
        return json.loads(self.raw_meta[key]) if key in self.raw_meta else default

    def optimizer_state(self, prefix: str) -> dict | None:
        return optimizer_state(prefix, self.tensors, self.raw_meta) if prefix in self.raw_meta else None

    def rng(self) -> dict | None:
        if "rng.torch" not in self.tensors:
            return None
        state = self.json("rng")
        state["torch"] = self.tensors["rng.torch"]
        cuda = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in self.tensors.items() if k.startswith("rng.cuda."))
        if cuda:
            state["cuda"] = [v for _, v in cuda]
        return state


def read_metadata(path: str | Path) -> dict[str, str]:
    """Only the header of one of our checkpoints (cheap: used by --dry-run and the doctor)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})",
                              hint="The file is corrupt or truncated: delete it (or pass another checkpoint).") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not an ohlora GAN checkpoint (no '{FORMAT}' header)")
    return meta


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    meta = read_metadata(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
        for key in ("G_config", "D_config", "counters"):
            json.loads(meta[key])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc})",
                              hint="Delete it to resume from the one before, or pass another checkpoint.") from exc
    return Checkpoint(path, tensors, meta)


# ------------------------------------------------------------------------------ GenForce


def _torch_load(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file", hint="Check model.checkpoint.")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusal, truncation, zip errors: all mean "cannot use this file"
        raise CheckpointError(
            f"{path}: cannot read it as a PyTorch checkpoint with weights_only=True ({type(exc).__name__}: {exc})",
            hint="Use a GenForce StyleGAN .pth (state dicts of tensors) or one of our .safetensors checkpoints; "
                 "files that need full unpickling are refused on purpose.",
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of state dicts, got {type(data).__name__}")
    return data


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def read_networks(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts by role (``generator``, ``generator_smooth``, ``discriminator``) from any of
    the accepted files: ours, GenForce model-zoo, GenForce training checkpoint, bare state dict;
    a run folder stands for its latest checkpoint."""
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        ckpt = read_checkpoint(path)
        found = {"generator": ckpt.section("G"), "generator_smooth": ckpt.section("G_ema"),
                 "discriminator": ckpt.section("D")}
        return {k: v for k, v in found.items() if v}
    data = _torch_load(path)
    if isinstance(data.get("models"), dict):
        data = data["models"]
    found = {role: data[role] for role in ("generator", "generator_smooth", "discriminator") if _is_state_dict(data.get(role))}
    if found:
        return found
    if _is_state_dict(data):
        data = {k.removeprefix("module."): v for k, v in data.items()}
        if any(k.startswith("mapping.") for k in data):
            return {"generator": data}
        if any(re.match(r"(input|layer)\d+\.", k) for k in data):
            return {"discriminator": data}
    raise CheckpointError(
        f"{path}: no StyleGAN networks found (top-level keys: {', '.join(list(data)[:8])})",
        hint="Expected GenForce's 'generator' / 'generator_smooth' / 'discriminator' (at the top or under "
             "'models'), or a bare generator or discriminator state dict.",
    )


def load_into(net: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, source: Path) -> list[str]:
    """Copy ``state`` into ``net``; returns the parameters left at their fresh initialisation
    because their shape depends on the labels (a label-free checkpoint into a conditional model,
    or the reverse). Any other difference is a CheckpointError."""
    own = net.state_dict()
    label_keys = set(net.label_dependent())
    reinit, problems = [], []
    for key in own:
        if key not in state:
            (reinit if key in label_keys else problems).append(key if key in label_keys else f"{key}: missing")
        elif state[key].shape != own[key].shape:
            # dense0 may only change its input width (z_dim + label_dim): its outputs must match
            same_outputs = state[key].shape[0] == own[key].shape[0] or "dense0" not in key
            if key in label_keys and same_outputs:
                reinit.append(key)
            else:
                problems.append(f"{key}: checkpoint {tuple(state[key].shape)}, model {tuple(own[key].shape)}")
    problems += [f"{key}: not in the model" for key in state if key not in own and key not in label_keys]
    if problems:
        listed = "\n  ".join(problems[:6]) + ("\n  ..." if len(problems) > 6 else "")
        raise CheckpointError(
            f"{source}: the {what} in this checkpoint does not fit the recipe's model ({len(problems)} differences):\n  {listed}",
            hint="model.resolution, z_dim, w_dim, mapping_layers, fmaps_base and fmaps_max must match the checkpoint "
                 "(GenForce 256 px: resolution 256, z_dim 512, w_dim 512, mapping_layers 8, fmaps_base 16384, fmaps_max 512).",
        )
    for key in ("lod", "synthesis.lod"):
        if key in state and float(state[key]) != 0.0:
            raise CheckpointError(f"{source}: the {what} was saved mid progressive growing (lod {float(state[key])})",
                                  hint="Use a checkpoint of a finished GenForce run (lod 0).")
    with torch.no_grad():
        for key, value in own.items():
            if key in state and key not in reinit:
                value.copy_(state[key].to(value.dtype))
    return reinit


def load_pretrained(path: str | Path, G: Generator, G_ema: Generator, D: Discriminator) -> list[str]:
    """Initialise from ``model.checkpoint`` (ours, GenForce, or a run folder). Returns the re-initialised
    parameters (``G.mapping.dense0.weight``, ...), also shown as a warning."""
    path = resolve_checkpoint(path)
    nets = read_networks(path)
    if "generator" not in nets and "generator_smooth" not in nets:
        raise CheckpointError(f"{path}: holds no generator", hint="model.checkpoint must contain a StyleGAN generator.")
    reinit = [f"G.{k}" for k in load_into(G, nets.get("generator") or nets["generator_smooth"], what="generator", source=path)]
    load_into(G_ema, nets.get("generator_smooth") or nets["generator"], what="generator", source=path)
    with torch.no_grad():  # G_ema starts as G wherever G was re-initialised
        for key in reinit:
            G_ema.get_parameter(key[2:]).copy_(G.get_parameter(key[2:]))
    if "discriminator" in nets:
        reinit += [f"D.{k}" for k in load_into(D, nets["discriminator"], what="discriminator", source=path)]
    else:
        warn(f"{path} holds no discriminator: D starts from scratch")
    if reinit:
        warn("re-initialised (their shape depends on the labels): " + ", ".join(reinit))
    return reinit


# ---------------------------------------------------------------------------- load_generator


def generator_config_from_state(state: dict[str, torch.Tensor], source: Path) -> dict:
    """Rebuild GenForce StyleGAN constructor arguments from a generator state dict."""
    try:
        dense = [k for k in state if re.fullmatch(r"mapping\.dense\d+\.weight", k)]
        blocks = len([k for k in state if re.fullmatch(r"synthesis\.output\d+\.weight", k)])
        resolution = 4 * 2 ** (blocks - 1)
        first = state["mapping.dense0.weight"]
        label = state.get("mapping.label_weight")
        label_size, label_dim = (int(label.shape[0]), int(label.shape[1])) if label is not None else (0, 16)
        top = int(state[f"synthesis.layer{2 * blocks - 1}.weight"].shape[0])
        widths = [int(v.shape[0]) for k, v in state.items() if re.fullmatch(r"synthesis\.layer\d+\.weight", k)]
        widths.append(int(state["synthesis.layer0.const"].shape[1]))
        return dict(
            resolution=resolution, z_dim=int(first.shape[1]) - (label_dim if label_size else 0),
            w_dim=int(state["truncation.w_avg"].numel()), label_size=label_size, label_dim=label_dim,
            mapping_layers=len(dense), mapping_fmaps=int(first.shape[0]) if len(dense) > 1 else None,
            mapping_lr_mul=0.01, fmaps_base=top * resolution, fmaps_max=max(widths),
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a GenForce StyleGAN generator (missing {exc})") from exc


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator (``G_ema`` / ``generator_smooth``, else ``G`` / ``generator``) in eval mode.

    ``path``: one of our checkpoints, a run's ``output_dir`` (its latest checkpoint), or a
    GenForce StyleGAN ``.pth``. ``G(z, labels)`` -> images in [-1, 1], ``(N, 3, R, R)``.
    """
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        ckpt = read_checkpoint(path)
        G = Generator(**ckpt.json("G_config"))
        state = ckpt.section("G_ema") or ckpt.section("G")
        labels = ckpt.json("labels", {})
        G.label_names = labels.get("names", [])
        G.label_mean, G.label_std = labels.get("mean"), labels.get("std")
        G.label_spread = labels.get("spread")  # absent from checkpoints written before it was stored
    else:
        nets = read_networks(path)
        state = nets.get("generator_smooth") or nets.get("generator")
        if state is None:
            raise CheckpointError(f"{path}: holds no generator")
        G = Generator(**generator_config_from_state(state, path))
    load_into(G, state, what="generator", source=path)
    missing = [k for k in G.label_dependent() if k in G.state_dict() and k not in state]
    if missing:
        raise CheckpointError(f"{path}: generator is missing {', '.join(missing)}")
    return G.eval().requires_grad_(False).to(device)


def check_start_checkpoint(recipe, label_size: int) -> None:
    """Read ``model.checkpoint`` and check it fits the recipe's networks, built on the meta device."""
    path = Path(recipe.model.checkpoint)
    if not path.exists():
        raise CheckpointError(f"model.checkpoint: {path} does not exist",
                              hint="Fix the path (relative to the current directory).")
    nets = read_networks(path)  # a run folder: its latest checkpoint
    with torch.device("meta"):
        G, D = build_networks(recipe, label_size)
    for role, net in (("generator_smooth", G), ("generator", G), ("discriminator", D)):
        if role in nets:
            load_into(net, nets[role], what=role.replace("_smooth", ""), source=path)
