"""Ground truth by execution for the doctor's fixture corpus (tests/fixtures/doctor).

Usage:
  python bench/doctor_groundtruth.py                          # every case: run, print the table and totals
  python bench/doctor_groundtruth.py --save gt.json           # ... and keep the raw results
  python bench/doctor_groundtruth.py --from gt.json           # the table from saved results, nothing rerun
  python bench/doctor_groundtruth.py --from gt.json rerun.json   # merged: a case in rerun.json replaces gt.json's
  python bench/doctor_groundtruth.py --from gt.json --explain docs/doctor-groundtruth.md   # causes per disagreement
  python bench/doctor_groundtruth.py --cases seed1_python_floats grad_losses_append --steps 6
  python bench/doctor_groundtruth.py --runner K OUT.json SCRIPT [ARGS...]   # (internal) the plain runner

Each case folder is copied to a temporary folder (the fixtures are never written), the small
synthetic data its script reads is made there (``DATA`` below: CSV / JSONL / .npy / PNG files and a
two-layer GPT-NeoX with a word-level tokenizer where a script loads ``./polyglot-ko-1.3b``,
``./base``, ...), and then, for every run of its expected.json:

(a) static: the doctor's static findings (``analyse`` from bench/doctor_accuracy.py);
(b) --run: ``ohlora doctor SCRIPT --run --json --steps K --timeout T [--gpus G]`` in the copy; the
    findings after the first ``observed-*`` row are the observed ones (the JSON's last section);
(c) plain, once per case (plain python cannot simulate GPUs, so it is the same for every run):
    ``python SCRIPT`` to its end or ``--plain-timeout`` (exit status, exception type and the
    innermost frame in the case's own files), and this file's own runner (``--runner``), written
    without the doctor's instruments: the script under ``runpy`` with a global optimizer step
    post-hook; at each step of the first optimizer that steps, ``gc`` finds every live tensor with
    a ``grad_fn`` and the autograd nodes reachable from them are counted (and the float64 ones);
    growth = a node count that never falls and rises at least 3 times over the boundaries from the
    2nd on; it stops after K steps; a crash keeps its type and innermost user frame; the first
    dimension of the first tensor of each top-level module call before the first step is the batch.
    A script whose device is hard-wired to "cuda" (``PLAIN_ON_CPU``) runs plainly from a copy where
    that literal says "cpu" (same line numbers); static and --run see the script as it is.

What plain execution on a CPU cannot show: a second GPU (``multi-gpu-batch``) and CUDA's
initialisation order (``cuda-visible-devices-late``): those columns say "not observable on CPU".

The cases run in a pool of ``--workers`` (at most 2) threads, each job with its own time limit;
timeouts are recorded. Prints a markdown table and one JSON line of totals (agreement of static,
--run and expected with plain execution, per check).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "tests" / "fixtures" / "doctor"
PLAIN_CHECKS = ("dtype-mismatch", "grad-inference")  # what plain execution on a CPU can show
GPU_CHECKS = ("multi-gpu-batch", "cuda-visible-devices-late")
CHECKS = PLAIN_CHECKS + GPU_CHECKS
DTYPE_ERROR = re.compile(r"dtype|Double|Float|float64|double|Half|BFloat16|scalar type", re.I)
RANK = {"none": 0, "pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 2}


# -- the plain runner (runs in the script's own process; no doctor import) ---------------------

def runner(steps: int, out: str, script: str, args: list[str]) -> None:
    import runpy

    import torch

    case = os.path.realpath(os.getcwd())
    record: dict = {"steps": 0, "nodes": [], "grad_tensors": [], "float64_nodes": [], "batches": [],
                    "crash": None, "exit": None, "stopped": False}
    clock: list = []
    depth = [0]

    class Stop(BaseException):
        pass

    def on_step(optimizer, *_):
        if not clock:
            clock.append(optimizer)
        if optimizer is not clock[0]:
            return
        record["steps"] += 1
        tensors, nodes, f64 = _census(torch)
        record["grad_tensors"].append(tensors)
        record["nodes"].append(nodes)
        record["float64_nodes"].append(f64)
        _save(out, record)
        if record["steps"] >= steps:
            record["stopped"] = True
            raise Stop()

    def pre(module, inputs):
        if depth[0] == 0 and not record["steps"] and next(module.parameters(), None) is not None:
            first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
            if first is not None and first.dim() and len(record["batches"]) < 8:
                record["batches"].append([type(module).__name__, int(first.shape[0])])
        depth[0] += 1

    def post(module, inputs, output):
        depth[0] -= 1

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(on_step)
    torch.nn.modules.module.register_module_forward_pre_hook(pre)
    torch.nn.modules.module.register_module_forward_hook(post, always_call=True)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except Stop:
        pass
    except SystemExit as exc:
        record["exit"] = exc.code if isinstance(exc.code, int) else str(exc.code)
    except BaseException as exc:  # noqa: BLE001 - the crash is the observation
        record["crash"] = _crash(exc, case)
    _save(out, record)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no DataLoader teardown, atexit or end-of-training work after the K steps


def _census(torch) -> tuple[int, int, int]:
    """Live tensors with a grad_fn, autograd nodes reachable from them, float64 ones among the tensors."""
    import gc

    gc.collect()
    seen: dict = {}
    stack, tensors, f64 = [], 0, 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.grad_fn is not None:
            tensors += 1
            f64 += obj.dtype is torch.float64
            stack.append(obj.grad_fn)
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node  # held, so that ids are not reused during the walk
        stack.extend(nxt for nxt, _ in node.next_functions)
    return tensors, len(seen), f64


def _crash(exc: BaseException, case: str) -> dict:
    """Type, message and the innermost frame in the case's own files."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.isfile(f.filename) and os.path.realpath(f.filename).startswith(case + os.sep)]
    user = frames[-1] if frames else None
    return {"type": type(exc).__name__, "message": str(exc)[:300],
            "where": f"{os.path.relpath(os.path.realpath(user.filename), case)}:{user.lineno}" if user else None,
            "line": user.line if user else None}


def _save(path: str, record: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)


def growth(nodes: list[int]) -> bool:
    """A node count that never falls and rises at least 3 times over the boundaries from the 2nd on."""
    tail = nodes[1:]
    rises = sum(b > a for a, b in zip(tail, tail[1:], strict=False))
    return len(tail) >= 4 and all(b >= a for a, b in zip(tail, tail[1:], strict=False)) and rises >= 3


# -- synthetic data ----------------------------------------------------------------------------

def _rng():
    import numpy as np

    return np.random.default_rng(0)


def _csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    lines = ([",".join(header)] if header else []) + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _images(folder: Path, n: int, size: int) -> list[str]:
    from PIL import Image

    rng = _rng()
    (folder / "images").mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / "images" / f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype="uint8")).save(path)
        paths.append(str(path))
    return paths


def _scores(n: int, k: int) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in _rng().random((n, k))]


SEED1_COLUMNS = ["eyes_score", "hair_color_score", "hair_length_score", "mouth_score", "pose_score",
                 "background_mean_score", "background_std_score"]


def _seed1(d: Path) -> None:
    # the dataset resizes to 256 whatever it reads; 16x16 files are the networks' own size
    paths = _images(d, 64, 16)
    _csv(d / "property_scores.csv", ["img_path", *SEED1_COLUMNS],
         [[p, *s] for p, s in zip(paths, _scores(64, 7), strict=True)])


def _seed2(d: Path) -> None:
    paths = _images(d, 128, 32)  # networks.py: 3 * 32 * 32
    _csv(d / "property_scores.csv", ["img_path", *SEED1_COLUMNS],
         [[p, *s] for p, s in zip(paths, _scores(128, 7), strict=True)])


def _seed3(d: Path) -> None:
    rows = [["train" if i % 5 else "valid", f"질문 {i}", f"답변 {i}"] for i in range(40)]
    _csv(d / "dialogue.csv", ["data_type", "input_data", "output_data"], rows)


def _dialogue_jsonl(d: Path) -> None:
    lines = [json.dumps({"prompt": f"질문 {i} ### 답변:", "completion": f" 답변 {i}"}, ensure_ascii=False)
             for i in range(40)]
    (d / "dialogue.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _hair(d: Path) -> None:
    paths = _images(d, 128, 16)
    _csv(d / "hair.csv", ["img_path", "hair_length_class"], [[p, i % 3] for i, p in enumerate(paths)])


def _score_records(d: Path) -> None:
    keys = ["eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean", "background_std"]
    rows = [json.dumps(dict(zip(keys, s, strict=True))) for s in _scores(64, 7)]
    (d / "scores.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _crops(d: Path) -> None:
    paths = _images(d, 128, 16)
    _csv(d / "scores.csv", ["img_path", "eyes_score", "mouth_score", "pose_score"],
         [[p, *s] for p, s in zip(paths, _scores(128, 3), strict=True)])


def _features(d: Path) -> None:
    import numpy as np

    np.save(d / "features.npy", _rng().random((512, 512)))
    _csv(d / "scores.csv", ["eyes_score", "mouth_score"], _scores(512, 2))


def _face_scores(d: Path) -> None:
    paths = _images(d, 128, 16)
    _csv(d / "scores.csv", ["path", "eyes_score", "mouth_score", "pose_score"],
         [[p, *s] for p, s in zip(paths, _scores(128, 3), strict=True)])


def _targets(d: Path) -> None:
    _csv(d / "targets.csv", None, _scores(128, 4))  # inputs are randn(128, 3): 128 rows


def _features_csv(d: Path) -> None:
    _csv(d / "features.csv", [f"f{i}" for i in range(6)], _scores(256, 6))


def _labels_rows(d: Path) -> None:
    _csv(d / "labels.csv", None, [[f"img{i}", *s] for i, s in enumerate(_scores(64, 7))])


def _labels_abc(d: Path) -> None:
    _csv(d / "labels.csv", ["a", "b", "c"], _scores(64, 3))


def _labels_npy(d: Path) -> None:
    import numpy as np

    np.save(d / "labels.npy", _rng().random((32, 7)).astype("float32"))


def _samples_folder(d: Path) -> None:
    (d / "samples").mkdir()  # the script saves into it and never makes it: a folder the project has


DATA = {
    "genforce_dynamic_layers_sampling": _samples_folder, "star_import_sampling": _samples_folder,
    "seed1_python_floats": _seed1, "seed1_float_fix": _seed1, "seed1_double_fix": _seed1,
    "seed2_sample_every_50": _seed2, "seed2_no_grad_fix": _seed2, "seed2_eval_only": _seed2,
    "seed3_config_module": _seed3, "seed3_config_module_fixed": _seed3,
    "trainer_in_script": _dialogue_jsonl, "trainer_in_script_pinned": _dialogue_jsonl,
    "clean_int_class_labels": _hair,
    "dtype_dict_of_floats": _score_records, "dtype_dict_of_floats_clean": _score_records,
    "dtype_pandas_values": _crops, "dtype_pandas_values_clean": _crops,
    "dtype_tolist": _features, "dtype_tolist_clean": _features,
    "enumerate_dict_batch": _face_scores, "enumerate_dict_batch_clean": _face_scores,
    "early_return": _targets, "early_return_clean": _targets,
    "builtins_dict_items_range": _features_csv,
    "builtins_list_map_sorted": _labels_rows,
    "torch_hstack_concat": _labels_abc,
    "sys_path_sibling": _labels_npy,
}
# Plain execution runs on this machine's CPU; a script whose device is hard-wired to "cuda" gets, in a
# copy used by the plain run and the runner only, that one literal replaced on its own line (line
# numbers kept). The static analysis and --run see the script as it is (--run simulates the GPU).
PLAIN_ON_CPU = {
    "seed2_sample_every_50": [("train.py", 'device="cuda"', 'device="cpu"')],
    "seed2_no_grad_fix": [("train.py", 'device="cuda"', 'device="cpu"')],
    "seed2_eval_only": [("train.py", 'device="cuda"', 'device="cpu"')],
}


def plain_copy(case: str, folder: Path) -> tuple[Path, list[str]]:
    """The folder the plain run and the runner use: ``folder`` itself, or a patched copy beside it."""
    if case not in PLAIN_ON_CPU:
        return folder, []
    target = folder.parent / f"{folder.name}.plain"
    shutil.copytree(folder, target, symlinks=True)
    done = []
    for name, old, new in PLAIN_ON_CPU[case]:
        path = target / name
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            raise ValueError(f"{case}/{name}: expected one {old!r}, found {text.count(old)}")
        path.write_text(text.replace(old, new), encoding="utf-8")
        line = text[:text.index(old)].count("\n") + 1
        done.append(f"{name}:{line} {old} -> {new} (plain run only)")
    return target, done


MODEL_REF = re.compile(r"""from_pretrained\(\s*["']([^"']+)["']|default=["'](\./[^"']+)["']""")

TINY_LM = r"""
import sys
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast
words = ["<pad>", "<unk>", "<s>", "</s>", "a", "b", "c", "hello", "###", "답변:", "(답변", "시작)", "종료)"]
words += [str(i) for i in range(40)] + ["질문", "답변", "오늘", "뭐", "했어?"]
vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                               eos_token="</s>")
config = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128, pad_token_id=0, bos_token_id=2,
                       eos_token_id=3)
GPTNeoXForCausalLM(config).save_pretrained(sys.argv[1])
fast.save_pretrained(sys.argv[1])
"""


def tiny_lm(cache: Path) -> Path:
    """A two-layer GPT-NeoX (the polyglot-ko family) with a word-level tokenizer, made once."""
    target = cache / "tiny-gpt-neox"
    if not (target / "config.json").is_file():
        subprocess.run([sys.executable, "-c", TINY_LM, str(target)], check=True, capture_output=True, timeout=600)
    return target


def make_data(case: str, folder: Path, cache: Path) -> list[str]:
    """Write what the case's script reads into ``folder``; returns what was made."""
    made = []
    if case in DATA:
        DATA[case](folder)
        made.append(DATA[case].__name__.lstrip("_"))
    sources = " ".join(p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*.py"))
    for match in MODEL_REF.finditer(sources):
        ref = match.group(1) or match.group(2)
        if ref and not (folder / ref).exists() and (ref.startswith("./") or "/" in ref):
            shutil.copytree(tiny_lm(cache), folder / ref)
            made.append(f"tiny model at {ref}")
    return made


# -- one case ----------------------------------------------------------------------------------

def cases(names: list[str] | None) -> list[Path]:
    found = sorted(p for p in FIXTURES.iterdir() if (p / "expected.json").is_file())
    return [p for p in found if not names or p.name in names]


def strongest(findings: list[dict]) -> dict:
    """Per check: the strongest status ('none' when nothing) and the sites with that status."""
    out = {}
    for check in CHECKS:
        mine = [f for f in findings if f["check"] == check and RANK.get(f["status"], 0) > 0]
        top = max((f["status"] for f in mine), key=lambda s: RANK[s], default="none")
        out[check] = {"status": "fail" if top == "error" else top,
                      "at": sorted({f["where"] for f in mine if f["status"] == top and f["where"]})}
    return out


def expected_verdict(run: dict) -> dict:
    out = {check: {"status": "none", "at": []} for check in CHECKS}
    for item in run.get("found", []):
        status = item.get("status", "fail")
        slot = out[item["check"]]
        if RANK[status] > RANK[slot["status"]]:
            slot["status"] = status
        slot["at"] = sorted(set(slot["at"]) | {item["at"][0]})
    return out


def static_findings(folder: Path, script: str, gpus: int | None) -> dict:
    sys.path.insert(0, str(HERE))
    from doctor_accuracy import analyse

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        found = analyse(Path(script), gpus)
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal to the corpus
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        os.chdir(cwd)
    return strongest([{"check": f.check, "status": f.status.value, "where": f.where} for f in found])


def _env() -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _call(command: list[str], cwd: Path, timeout: float) -> dict:
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, 9)
        stdout, stderr = proc.communicate()
    else:
        try:
            os.killpg(proc.pid, 9)  # DataLoader workers left behind
        except (ProcessLookupError, PermissionError):
            pass
    return {"rc": proc.returncode, "timed_out": timed_out, "seconds": round(time.monotonic() - started, 1),
            "stdout": stdout, "stderr": stderr}


def run_doctor(folder: Path, script: str, gpus: int | None, steps: int, timeout: float) -> dict:
    command = [sys.executable, "-m", "ohlora_cli", "doctor", script, "--run", "--json", "--steps", str(steps),
               "--timeout", str(timeout)]
    if gpus is not None:
        command += ["--gpus", str(gpus)]
    # the doctor's own limit, plus a second run of 1 step with --gpus N > 1, plus imports
    result = _call(command, folder, timeout * (2 if gpus and gpus > 1 else 1) + 180)
    out = {"rc": result["rc"], "seconds": result["seconds"], "bench_timeout": result["timed_out"]}
    try:
        data = json.loads(result["stdout"])
    except ValueError:
        out["error"] = (result["stderr"] or result["stdout"])[-600:]
        return out
    findings = data["findings"]
    # the static section lists its checks in CHECKS order; the observed one starts over
    order = {c: i for i, c in enumerate(("dtype-mismatch", "grad-inference", "multi-gpu-batch",
                                         "cuda-visible-devices-late"))}
    first = next((i for i, f in enumerate(findings) if f["check"].startswith("observed-")
                  or (i and order.get(f["check"], 0) < order.get(findings[i - 1]["check"], 0))), len(findings))
    observed = findings[first:]
    out["observed"] = strongest(observed)
    out["combined"] = strongest(findings)
    out["run"] = {k: data["run"].get(k) for k in ("steps", "timed_out", "wall_s", "unreached", "demoted")}
    out["observed_rows"] = [{"check": f["check"], "status": f["status"], "where": f["where"],
                             "message": f["message"][:240]} for f in observed
                            if f["check"].startswith("observed-") or f["status"] in ("warn", "fail")]
    return out


USER_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)')
EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning|Stop\w*)|[A-Z]\w+)(?::\s?(.*))?$")


def parse_crash(stderr: str, folder: Path) -> dict | None:
    """The last exception of a Python traceback on stderr: type, message, innermost frame in the case."""
    lines = stderr.splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
                default=None)
    if start is None:
        return None
    where, text = None, None
    root = os.path.realpath(folder) + os.sep
    end = len(lines)
    for i in range(start + 1, len(lines)):
        m = USER_FRAME.match(lines[i])
        if m and os.path.realpath(m.group(1)).startswith(root):
            where = f"{os.path.relpath(os.path.realpath(m.group(1)), folder)}:{m.group(2)}"
            text = lines[i + 1].strip() if i + 1 < len(lines) else None
    for i in range(len(lines) - 1, start, -1):
        m = EXC_LINE.match(lines[i])
        if m and not lines[i].startswith(" "):
            end = i
            break
    m = EXC_LINE.match(lines[end]) if end < len(lines) else None
    return {"type": m.group(1).rsplit(".", 1)[-1] if m else "?", "message": (m.group(2) or "")[:300] if m else "",
            "where": where, "line": text}


def run_plain(folder: Path, script: str, timeout: float) -> dict:
    result = _call([sys.executable, script], folder, timeout)
    crash = parse_crash(result["stderr"], folder) if result["rc"] not in (0, None) and not result["timed_out"] else None
    return {"rc": result["rc"], "timed_out": result["timed_out"], "seconds": result["seconds"], "crash": crash,
            "stderr_tail": result["stderr"][-400:] if result["rc"] and not crash else ""}


def run_runner(folder: Path, script: str, steps: int, timeout: float) -> dict:
    out = folder.parent / f"{folder.name}.runner.json"
    result = _call([sys.executable, str(Path(__file__).resolve()), "--runner", str(steps), str(out), script],
                   folder, timeout)
    try:
        record = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {"steps": 0, "nodes": [], "crash": None, "error": result["stderr"][-400:]}
    record["timed_out"] = result["timed_out"]
    record["seconds"] = result["seconds"]
    record["growth"] = growth(record.get("nodes", []))
    return record


# -- plain verdicts ----------------------------------------------------------------------------

def plain_verdict(runner: dict, plain: dict) -> dict:
    """Per check: what plain execution showed ('fail', 'none', 'undecided', 'n/a').

    dtype-mismatch: 'fail' is a dtype RuntimeError; grad-inference: 'fail' is growth over the K steps.
    A WARN is never decided by plain execution: a promotion that does not crash looks like a float64
    model, and a graph built and thrown away leaves nothing to count."""
    crash = runner.get("crash") or plain.get("crash")
    dtype_crash = bool(crash and crash["type"] == "RuntimeError" and DTYPE_ERROR.search(crash["message"] or ""))
    out = {}
    if dtype_crash:
        out["dtype-mismatch"] = "fail"
    elif any(runner.get("float64_nodes", [])):
        # float64 in the graph and no crash: a silent promotion or a float64 model, plain cannot tell
        out["dtype-mismatch"] = "undecided"
    elif runner.get("steps", 0) == 0 and crash:
        out["dtype-mismatch"] = "undecided"  # crashed before the first step on something else
    else:
        out["dtype-mismatch"] = "none"
    if runner.get("growth"):
        out["grad-inference"] = "fail"
    elif runner.get("steps", 0) >= 5:
        out["grad-inference"] = "none"
    else:
        out["grad-inference"] = "undecided"  # fewer than 5 steps: growth cannot be seen
    for check in GPU_CHECKS:
        out[check] = "n/a"
    return out


def describe_plain(runner: dict, plain: dict) -> str:
    parts = []
    if plain.get("crash"):
        c = plain["crash"]
        parts.append(f"python: {c['type']} at {c['where'] or '?'}")
    elif plain.get("timed_out"):
        parts.append(f"python: still running at {plain['seconds']:.0f} s")
    elif plain.get("rc") == 0:
        parts.append("python: exit 0")
    else:
        parts.append(f"python: exit {plain.get('rc')}")
    crash = runner.get("crash")
    steps = runner.get("steps", 0)
    if crash:
        parts.append(f"runner: {crash['type']} at {crash['where'] or '?'} after {steps} steps")
    elif runner.get("timed_out"):
        parts.append(f"runner: timeout after {steps} steps")
    else:
        parts.append(f"runner: {steps} steps")
    if runner.get("nodes"):
        parts.append(f"nodes {runner['nodes']}" + (" GROWTH" if runner.get("growth") else ""))
    if any(runner.get("float64_nodes", [])):
        parts.append(f"float64 grad tensors {runner['float64_nodes']}")
    if runner.get("batches"):
        parts.append("batch " + ", ".join(f"{name} {n}" for name, n in runner["batches"][:2]))
    return "; ".join(parts)


# -- the corpus --------------------------------------------------------------------------------

def collect(names: list[str] | None, steps: int, timeout: float, plain_timeout: float, workers: int,
            save: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="doctor-gt-"))
    cache = work / "_cache"
    cache.mkdir()
    results: dict = {"meta": {"steps": steps, "timeout": timeout, "plain_timeout": plain_timeout,
                              "workers": workers, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "python": sys.version.split()[0], "cpus": os.cpu_count()}, "cases": {}}
    jobs = []
    plain_folders: dict[str, Path] = {}
    for case in cases(names):
        spec = json.loads((case / "expected.json").read_text(encoding="utf-8"))
        script = spec.get("script", "train.py")
        folder = work / case.name
        shutil.copytree(case, folder, ignore=shutil.ignore_patterns("expected.json", "__pycache__"))
        try:
            made = make_data(case.name, folder, cache)
        except Exception as exc:  # noqa: BLE001
            made = [f"data failed: {type(exc).__name__}: {exc}"]
        try:
            plain_folder, patched = plain_copy(case.name, folder)
        except (OSError, ValueError) as exc:
            plain_folder, patched = folder, [f"plain patch failed: {type(exc).__name__}: {exc}"]
        plain_folders[case.name] = plain_folder
        entry = {"script": script, "data": made, "plain_patch": patched, "runs": [], "plain": None, "runner": None}
        for run in spec["runs"]:
            entry["runs"].append({"gpus": run.get("gpus"), "expected": expected_verdict(run),
                                  "static": static_findings(folder, script, run.get("gpus")), "doctor": None})
        results["cases"][case.name] = entry
        jobs.append((case.name, "runner", None))
        jobs.append((case.name, "plain", None))
        jobs += [(case.name, "doctor", i) for i in range(len(entry["runs"]))]
    # the longest first would balance better, but a cut-off should leave whole cases: case order
    done = 0

    def job(name: str, kind: str, index: int | None):
        entry = results["cases"][name]
        folder = work / name
        if kind == "runner":
            return run_runner(plain_folders[name], entry["script"], steps, timeout + 60)
        if kind == "plain":
            return run_plain(plain_folders[name], entry["script"], plain_timeout)
        return run_doctor(folder, entry["script"], entry["runs"][index]["gpus"], steps, timeout)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, 2))) as pool:
        futures = {pool.submit(job, *j): j for j in jobs}
        for future in as_completed(futures):
            name, kind, index = futures[future]
            try:
                value = future.result()
            except Exception as exc:  # noqa: BLE001
                value = {"error": f"{type(exc).__name__}: {exc}"}
            entry = results["cases"][name]
            if kind == "doctor":
                entry["runs"][index]["doctor"] = value
            else:
                entry[kind] = value
            done += 1
            results["meta"]["jobs_done"] = done
            results["meta"]["jobs"] = len(jobs)
            if save:
                _dump(results, save)
            print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {done}/{len(jobs)} {name} {kind} "
                  f"{'' if index is None else index}", file=sys.stderr, flush=True)
    results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if save:
        _dump(results, save)
    shutil.rmtree(work, ignore_errors=True)
    return results


def _dump(results: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- several saved results as one -------------------------------------------------------------

SETTINGS = ("steps", "timeout", "plain_timeout")


def _jobs(entry: dict) -> tuple[int, int]:
    """(jobs with a result, jobs) of one case: its runner, its plain run, one --run per run."""
    have = [entry.get("runner"), entry.get("plain"), *(run.get("doctor") for run in entry["runs"])]
    return sum(x is not None for x in have), len(have)


def merge(parts: list[tuple[str, dict]]) -> dict:
    """Saved results as one: a case found in several files is taken whole from the last of them (a
    full run, then targeted reruns). ``meta.sources`` says what each file gave and what it overrode;
    a setting (K, the time limits) that differs between the cases kept is listed as ``mixed``."""
    cases: dict = {}
    origin: dict = {}
    sources = []
    for label, results in parts:
        names = list(results.get("cases", {}))
        sources.append({"file": label, "started": results.get("meta", {}).get("started"),
                        "cases": len(names), "overrides": sorted(n for n in names if n in cases)})
        for name in names:
            cases[name] = results["cases"][name]
            origin[name] = results.get("meta", {})
    meta: dict = {"sources": sources}
    for key in SETTINGS:
        values = sorted({str(origin[n].get(key)) for n in cases})
        meta[key] = origin[next(iter(cases))].get(key) if len(values) == 1 else "mixed (" + ", ".join(values) + ")"
    counts = [_jobs(entry) for entry in cases.values()]
    meta["jobs_done"], meta["jobs"] = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {"meta": meta, "cases": dict(sorted(cases.items()))}


def load(paths: list[Path]) -> dict:
    """One saved results file as it is; several, merged (later files override earlier ones per case)."""
    parts = [(str(p), json.loads(p.read_text(encoding="utf-8"))) for p in paths]
    return parts[0][1] if len(parts) == 1 else merge(parts)


# -- table and totals --------------------------------------------------------------------------

def _short(verdict: dict | None, checks=CHECKS) -> str:
    if not verdict:
        return "-"
    if "error" in verdict:
        return f"error: {verdict['error'][:60]}"
    parts = [f"{c} {v['status'].upper()} {','.join(v['at'])}".strip() for c, v in verdict.items()
             if c in checks and v["status"] != "none"]
    return "; ".join(parts) or "clean"


def rows(results: dict) -> list[dict]:
    out = []
    for name, entry in results["cases"].items():
        runner, plain = entry.get("runner"), entry.get("plain")
        plain_ok = runner is not None and plain is not None
        plain_v = plain_verdict(runner, plain) if plain_ok else None
        for run in entry["runs"]:
            doctor = run.get("doctor") or {}
            out.append({"case": name, "gpus": run["gpus"], "expected": run["expected"], "static": run["static"],
                        "observed": doctor.get("observed"), "doctor": doctor, "plain": plain_v,
                        "plain_text": (describe_plain(runner, plain) if plain_ok else "not run")
                        + "".join(f"; {p}" for p in entry.get("plain_patch", [])),
                        "pending": not plain_ok or not doctor})
    return out


def agreement(rows_: list[dict]) -> dict:
    """Per check: how often expected / static / --run (observed) say the same as plain execution:
    FAIL where plain execution showed the failure, no FAIL (WARN or nothing) where it did not.

    Only checks plain execution decides (dtype-mismatch, grad-inference) and rows where it decided."""
    totals: dict = {}
    for check in PLAIN_CHECKS:
        t = {"decided": 0, "undecided": 0}
        for side in ("expected", "static", "observed"):
            t[f"{side}_agree"] = t[f"{side}_disagree"] = 0
        for r in rows_:
            if r["pending"]:
                continue
            truth = r["plain"][check]
            if truth not in ("fail", "warn", "none"):
                t["undecided"] += 1
                continue
            t["decided"] += 1
            for side in ("expected", "static", "observed"):
                verdict = r[side]
                if not verdict or "error" in verdict:
                    t[f"{side}_disagree"] += 1
                    continue
                same = (verdict[check]["status"] == "fail") == (truth == "fail")  # plain decides no WARN
                t[f"{side}_agree" if same else f"{side}_disagree"] += 1
        totals[check] = t
    return totals


def disagreements(rows_: list[dict]) -> list[str]:
    out = []
    for r in rows_:
        if r["pending"]:
            continue
        label = f"{r['case']} (gpus {r['gpus']})"
        for check in CHECKS:
            sides = {}
            for side in ("expected", "static", "observed"):
                v = r[side]
                sides[side] = "?" if not v or "error" in v else v[check]["status"]
            truth = r["plain"][check] if r["plain"] else "?"
            decided = truth in ("fail", "none")
            differ = len(set(sides.values())) > 1 or (
                decided and any((v == "fail") != (truth == "fail") for v in sides.values()))
            if differ:
                out.append(f"{label} {check}: expected {sides['expected']}, static {sides['static']}, "
                           f"--run {sides['observed']}, plain {truth}")
    return out


def run_end(doc: dict | None) -> str:
    """How far the --run got: its steps (and the time limit when it stopped it), the observed-* rows
    that are not a pass (a crash, a non-zero exit), the static findings whose line it never ran
    ("not reached") and the static FAILs it saw clean ("demoted"). Results saved before the doctor
    listed ``unreached``/``demoted`` say nothing about them."""
    if not doc:
        return "not run"
    if "error" in doc:
        return f"no JSON (rc {doc.get('rc')})"
    run = doc.get("run") or {}
    parts = [f"{run.get('steps')} steps" + (" (time limit)" if run.get("timed_out") else "")]
    parts += [f"{x['check'].removeprefix('observed-')} {x['status'].upper()}: {x['message'][:90]}"
              for x in doc.get("observed_rows", []) if x["check"].startswith("observed-") and x["status"] != "pass"]
    for key, label in (("unreached", "not reached"), ("demoted", "demoted")):
        if run.get(key):
            parts.append(f"{label}: " + ", ".join(f"{x['check']} {x['where']}" for x in run[key]))
    return "; ".join(parts)


EXPLAINED = re.compile(r"^- (\S+) \(gpus (\S+)\) (\S+): (expected \S+, static \S+, --run \S+, plain \S+) (?:--|\u2014) (.+)$")


def explanations(path: Path) -> dict:
    """The doc's one-line causes: ``- CASE (gpus G) CHECK: expected E, static S, --run R, plain P -- CAUSE``
    (the bench's own disagreement line, then the cause), keyed by (case, gpus, check)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = EXPLAINED.match(line.strip())
        if m:
            out[(m.group(1), m.group(2), m.group(3))] = (m.group(4), m.group(5))
    return out


def explain(lines: list[str], causes: dict, cases_: set[str]) -> tuple[list[str], dict]:
    """Each disagreement with its cause from the doc, or UNEXPLAINED; a cause written for other
    verdicts is said so (the doc is stale there); causes for rows that no longer disagree are listed."""
    out, seen, counts = [], set(), {"disagreements": len(lines), "explained": 0, "unexplained": 0, "stale": 0}
    for line in lines:
        m = EXPLAINED.match(f"- {line} -- x")
        key = (m.group(1), m.group(2), m.group(3))
        seen.add(key)
        if key not in causes:
            counts["unexplained"] += 1
            out.append(f"{line} -- UNEXPLAINED")
        elif causes[key][0] != m.group(4):
            counts["stale"] += 1
            out.append(f"{line} -- STALE (the doc explains {causes[key][0]}): {causes[key][1]}")
        else:
            counts["explained"] += 1
            out.append(f"{line} -- {causes[key][1]}")
    gone = sorted(k for k in causes if k not in seen and k[0] in cases_)
    counts["no_longer_disagree"] = len(gone)
    out += [f"(the doc explains {c} (gpus {g}) {check}, which no longer disagrees)" for c, g, check in gone]
    return out, counts


def print_table(results: dict, causes: dict | None = None) -> dict:
    rs = rows(results)
    meta = results["meta"]
    print(f"Ground truth: {len(results['cases'])} cases, {len(rs)} runs, K={meta['steps']} steps, "
          f"--run timeout {meta['timeout']} s, plain timeout {meta['plain_timeout']} s, "
          f"jobs {meta.get('jobs_done', 0)}/{meta.get('jobs', '?')}")
    for source in meta.get("sources", []):
        print(f"- from {source['file']} (started {source['started']}): {source['cases']} cases"
              + (f", replacing {', '.join(source['overrides'])}" if source["overrides"] else ""))
    print()
    print("| case | gpus | expected | static | --run (observed) | --run end | plain execution |")
    print("|---|---|---|---|---|---|---|")
    for r in rs:
        end = run_end(r["doctor"])
        plain = r["plain_text"]
        if r["plain"]:
            plain += "; GPU count, CUDA init order: not observable on CPU"
        print(f"| {r['case']} | {r['gpus']} | {_short(r['expected'])} | {_short(r['static'])} | "
              f"{_short(r['observed'])} | {end} | {plain} |".replace("\n", " "))
    totals = agreement(rs)
    totals["runs_measured"] = sum(not r["pending"] for r in rs)
    totals["runs_pending"] = sum(r["pending"] for r in rs)
    print()
    print(f"{totals['runs_measured']} runs measured, {totals['runs_pending']} not (yet) run.")
    print()
    print("| check | decided by plain | undecided | expected agrees | static agrees | --run agrees |")
    print("|---|---|---|---|---|---|")
    for check in PLAIN_CHECKS:
        t = totals[check]
        print(f"| {check} | {t['decided']} | {t['undecided']} | {t['expected_agree']} | {t['static_agree']} | "
              f"{t['observed_agree']} |")
    print()
    print("Disagreements (expected, static and --run differ, or one says FAIL where plain showed none or not):")
    lines = disagreements(rs)
    if causes is not None:
        lines, totals["explained"] = explain(lines, causes, set(results["cases"]))
    for line in lines:
        print(f"- {line}")
    return totals


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--runner":
        runner(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", help="case folder names (default: all)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps for --run and the runner (K)")
    parser.add_argument("--timeout", type=float, default=120, help="--run time limit per run, seconds")
    parser.add_argument("--plain-timeout", type=float, default=60, help="plain `python SCRIPT` limit, seconds")
    parser.add_argument("--workers", type=int, default=2, help="parallel jobs (at most 2)")
    parser.add_argument("--save", type=Path, help="write the raw results (JSON), as they come")
    parser.add_argument("--from", dest="from_", type=Path, nargs="+",
                        help="print the table from saved results; several files are merged, a case in a "
                             "later file replacing the same case in an earlier one (a full run, then reruns)")
    parser.add_argument("--explain", type=Path, metavar="DOC",
                        help="give each disagreement its one-line cause from DOC (lines '- <the disagreement "
                             "line> -- <cause>'), flag those without one (UNEXPLAINED) or written for other "
                             "verdicts (STALE)")
    args = parser.parse_args()
    if args.from_:
        results = load(args.from_)
    else:
        results = collect(args.cases, args.steps, args.timeout, args.plain_timeout, args.workers, args.save)
    totals = print_table(results, explanations(args.explain) if args.explain else None)
    meta = results["meta"]
    print(json.dumps({"bench": "doctor_groundtruth", "cases": len(results["cases"]),
                      "runs": sum(len(e["runs"]) for e in results["cases"].values()),
                      "jobs_done": meta.get("jobs_done", 0), "jobs": meta.get("jobs"), "agreement": totals}))


if __name__ == "__main__":
    main()
