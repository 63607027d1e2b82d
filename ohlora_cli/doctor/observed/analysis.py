"""From the events of an observed run to findings (the same check ids as the static analysis).

Each finding names the user's own ``path:line``; the message carries the chain that was seen
and ``evidence`` the same chain as data, like a static finding's (ordered ``Step``: where a
float64 tensor or a graph was born, the library frames it passed, where it met a float32
parameter, what keeps it alive, the CUDA query and the late setting ...). Nothing is assumed: a
FAIL is something that happened.
"""

from __future__ import annotations

import ast
import re

from ..registry import Finding, Role, Status, Step
from .launch import Observed

RUN = "observed-run"
WRITES = "observed-writes"
CHECKS = ["dtype-mismatch", "grad-inference", "cuda-visible-devices-late"]


def _at(event_or_dict) -> str:
    data = event_or_dict if isinstance(event_or_dict, dict) else dict(event_or_dict.data, where=event_or_dict.where)
    text = data.get("where") or "an unknown place"
    if data.get("code"):
        text += f" (`{data['code']}`)"
    if data.get("via"):
        text += f" via {data['via']}"
    return text


def _step(where: str | None, role: Role, what: str = "") -> list[Step]:
    """One evidence step, or none when the run could not name the place."""
    return [Step(where, role, what)] if where else []


def _via_step(via: str | None) -> list[Step]:
    """``torch/utils/data/_utils/collate.py:211 (default_collate)`` as a PASSES step."""
    match = re.fullmatch(r"(.+:\d+) \((.+)\)", via or "")
    return [Step(match.group(1), Role.PASSES, f"`{match.group(2)}`")] if match else []


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


# -- dtype-mismatch -------------------------------------------------------------------------------


def _birth_text(birth: dict | None) -> str:
    if birth is None:
        return "a float64 tensor made where the run could not see it (a DataLoader worker, a file, native code)"
    source = f" from {birth['source']}" if birth.get("source") else ""
    text = f"a float64 tensor born at {_at(birth)} by `{birth['how']}`{source}"
    if birth.get("dataset"):
        text += f", from what {birth['dataset']} returns"
    return text


def _op_text(meet) -> str:
    """``cross_entropy`` and, when the float64 tensor was passed by keyword, which one."""
    keyword = meet.get("keyword")
    return f"`{meet.get('op')}`" + (f" (the float64 tensor passed as `{keyword}=`)" if keyword else "")


def _dtype_evidence(birth: dict | None, meet) -> list[Step]:
    """Born (the user's line, what made it), the library frame and the Dataset it came through,
    then where it met the float32 tensor (the parameter named when there is one)."""
    steps: list[Step] = []
    if birth is not None:
        source = f" of {birth['source']}" if birth.get("source") else ""
        steps += _step(birth.get("where"), Role.BORN, f"`{birth['how']}`{source} is float64")
        steps += _via_step(birth.get("via"))
        dataset = re.fullmatch(r"(\S+) \((.+:\d+)\)", birth.get("dataset") or "")
        if dataset:
            steps.append(Step(dataset.group(2), Role.PASSES, f"`{dataset.group(1)}` returns it"))
    error = f"; the op raised {meet.get('error')}" if meet.get("error") else "; float64 out"
    steps += _step(meet.where, Role.MEETS, f"{_op_text(meet)} with float32 {meet.get('other')}{error}"[:300])
    return steps


def dtype_findings(obs: Observed) -> list[Finding]:
    births = {e.get("id"): dict(e.data, where=e.where) for e in obs.of("born")}
    out = []
    for meet in obs.of("meets"):
        birth = births.get(meet.get("born"))
        chain = (f"{_birth_text(birth)} meets float32 {meet.get('other')} in {_op_text(meet)} at "
                 f"{_at(meet)}")
        born_at = (birth or {}).get("where") or meet.where
        hint = (f"Cast to float32 where it is born ({born_at}): `.float()`, `dtype=torch.float32` or "
                "`.astype(np.float32)`; `.double()` on the model is not the fix.")
        evidence = _dtype_evidence(birth, meet)
        if meet.get("error"):
            out.append(Finding("dtype-mismatch", Status.FAIL, f"observed: {chain}. The run died there: "
                               f"{meet.get('error')}", where=meet.where, hint=hint, evidence=evidence))
        else:
            out.append(Finding("dtype-mismatch", Status.WARN, f"observed: {chain}; the result is silently "
                               "promoted to float64 (slower, twice the memory, and float64 from here on)",
                               where=meet.where, hint=hint, evidence=evidence))
    return out


# -- grad-inference -------------------------------------------------------------------------------


def _growing(values: list[int]) -> bool:
    """Never down, up at least twice, over at least 3 boundaries."""
    if len(values) < 3 or values[-1] <= values[0]:
        return False
    ups = sum(1 for a, b in zip(values, values[1:], strict=False) if b > a)
    return all(b >= a for a, b in zip(values, values[1:], strict=False)) and ups >= 2


def _kept_window(held: list[int], old: list[int]) -> tuple[int, int] | None:
    """The longest stretch (first, last index) of at least 3 boundaries where ``held`` (bytes saved
    for backward, unused, alive) is > 0 and never falls, and in which some of them had already
    been alive at the boundary before (``old`` > 0: one graph lived across a whole step)."""
    best, start = None, None
    for i, value in enumerate(held + [0]):
        if start is not None and (value <= 0 or value < held[i - 1]):
            if i - start >= 3 and any(old[start:i]) and (best is None or i - start > best[1] - best[0] + 1):
                best = (start, i - 1)
            start = None
        if start is None and value > 0:
            start = i
    return best


def rises(values: list[int]) -> list[int]:
    """The indexes ``i`` where ``values[i + 1] > values[i]``."""
    return [i for i, (a, b) in enumerate(zip(values, values[1:], strict=False)) if b > a]


def settled(values: list[int]) -> bool:
    """No rise, or a last rise followed by at least 2 boundaries that did not rise (a bounded
    holder filled up: ``losses[-2:]``), over the boundaries seen."""
    up = rises(values)
    return not up or len(values) - 2 - up[-1] >= 2


def grad_series(censuses: list) -> dict[str, list]:
    """Per user line, ``(step, counts)`` at each census from the 2nd on (at the 1st nothing can have
    survived an earlier one); counts: ``nodes``, ``bytes`` (saved for backward before the
    previous boundary), ``held`` (saved for backward, unused, alive), ``holders``."""
    empty = {"nodes": 0, "bytes": 0, "held": 0, "holders": []}
    sites = {w for c in censuses for w in c.get("sites", {})}
    return {where: [(c.get("step"), {**empty, **c.get("sites", {}).get(where, {})}) for c in censuses[1:]]
            for where in sites}


_FILLS = {"append", "extend", "insert", "add", "appendleft", "update", "setdefault", "put"}


def _filled_at(path: str, name: str) -> list[int]:
    """Lines of ``path`` that put something into ``name`` (``name.append(...)``, ``name += ...``,
    ``name[k] = ...``), else those that assign it: where a holder keeps what it holds."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return []
    fills, assigns = [], []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _FILLS
                and isinstance(node.func.value, ast.Name) and node.func.value.id == name):
            fills.append(node.lineno)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            fills.append(node.lineno)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                        and target.value.id == name):
                    fills.append(node.lineno)
                elif isinstance(target, ast.Name) and target.id == name:
                    assigns.append(node.lineno)
    return sorted(fills) or sorted(assigns)


def _kept_by(where: str, holders: list[str]) -> list[Step]:
    """A KEPT_BY step per holder: the line that fills it (the first at or after the line that built
    the graph), in the built line's file; the built line itself when no such line is found."""
    path, _, line = where.rpartition(":")
    steps = []
    for holder in holders[:3]:
        name = re.match(r"`([^`]+)`", holder)
        lines = _filled_at(path, name.group(1)) if name else []
        after = [n for n in lines if n >= int(line or 0)] or lines
        steps.append(Step(f"{path}:{after[0]}" if after else where, Role.KEPT_BY, holder))
    return steps


def _holders_seen(points: list) -> list[str]:
    """The holders named at any of ``points``, latest first (a graph rebuilt at a boundary has no
    old nodes yet there, so its holder is named at the boundaries it survived)."""
    return list(dict.fromkeys(h for _, counts in reversed(points) for h in counts.get("holders") or []))


def _calls_between(censuses: list, where: str, first: int, last: int) -> dict:
    """The per-call stats of ``where`` made between census ``first`` and census ``last`` (indexes)."""
    before = censuses[first].get("calls", {}).get(where, {})
    after = censuses[last].get("calls", {}).get(where, {})
    return {key: after.get(key, 0) - before.get(key, 0) for key in ("calls", "backward", "saved")}


def grad_findings(obs: Observed) -> list[Finding]:
    censuses = obs.of("census")
    if not censuses:
        return []
    series = grad_series(censuses)
    last = censuses[-1]
    codes = last.get("code", {})
    out, growing = [], set()
    for where, points in series.items():
        nodes = [p[1]["nodes"] for p in points]
        saved = [p[1]["bytes"] for p in points]
        if not (_growing(nodes) or _growing(saved)) or where == "?":
            continue
        growing.add(where)
        steps = len(points) - 1
        per_node = (nodes[-1] - nodes[0]) / steps
        per_byte = (saved[-1] - saved[0]) / steps
        holders = points[-1][1].get("holders") or []
        code = f" (`{codes[where]}`)" if codes.get(where) else ""
        message = (f"observed: the graphs built at {where}{code} survive optimizer steps: "
                   f"{', '.join(map(str, nodes))} autograd nodes alive at steps {points[0][0]}..{points[-1][0]} "
                   f"(+{per_node:.0f} nodes per step)")
        if per_byte > 0:
            message += f", {_kb(saved[-1])} of activations saved for backward (+{_kb(per_byte)} per step)"
        message += ". Memory grows with every step."
        if holders:
            message += f" Held by {', '.join(holders[:3])}."
        buffers = [h for h in holders if h.startswith("buffer ")]
        hint = "Run it under `with torch.no_grad():` or keep `.detach()` / `.item()` of it."
        if buffers:
            message += (f" The {', '.join(buffers[:3])} of a module is updated in place with autograd on: each "
                        "update chains the graph of the previous ones.")
            hint = ("Update the buffer under `with torch.no_grad():`, or copy `.detach()` of the new value into "
                    "it.")
        evidence = [Step(where, Role.BORN, f"`{codes[where]}` builds the graphs" if codes.get(where) else ""),
                    *_kept_by(where, holders),
                    Step(where, Role.OBSERVED, f"{nodes[0]} -> {nodes[-1]} autograd nodes alive at steps "
                                               f"{points[0][0]}..{points[-1][0]}")]
        out.append(Finding("grad-inference", Status.FAIL, message, where=where, evidence=evidence, hint=hint))
    kept = _kept_findings(censuses, series, growing, codes)
    out += kept
    return out + _waste_findings(censuses, series, growing | {f.where for f in kept}, codes)


def _kept_findings(censuses: list, series: dict, growing: set, codes: dict) -> list[Finding]:
    """FAIL: a line's graphs, built with autograd on and never backpropagated, kept alive across
    step boundaries without growing (``_kept_window``)."""
    out = []
    for where, points in series.items():
        if where in growing or where == "?":
            continue
        held = [p[1]["held"] for p in points]
        window = _kept_window(held, [p[1]["bytes"] for p in points])
        if window is None:
            continue
        first, end = window
        # a training graph waits for its backward across another optimizer's steps (a GAN's
        # discriminator stepping first): backward reaches that line once the stretch has begun
        if _calls_between(censuses, where, first + 1, len(censuses) - 1)["backward"] > 0:
            continue
        span = points[first:end + 1]
        steps = f"{span[0][0]}..{span[-1][0]}"
        holders = _holders_seen(span)
        code = f" (`{codes[where]}`)" if codes.get(where) else ""
        message = (f"observed: the graphs built at {where}{code} with autograd on are kept alive across "
                   f"optimizer steps and no backward ever frees them: {_kb(held[end])} of activations saved "
                   f"for backward alive at steps {steps} ({', '.join(_kb(h) for h in held[first:end + 1])})")
        if held[end] > held[first]:
            message += (f"; it grew from {_kb(held[first])} to {_kb(held[end])}: rebuilt while the old one "
                        "was still held")
        message += ". That memory stays taken."
        if holders:
            message += f" Held by {', '.join(holders[:3])}."
        evidence = [Step(where, Role.BORN, f"`{codes[where]}` builds the graphs" if codes.get(where) else ""),
                    *_kept_by(where, holders),
                    Step(where, Role.OBSERVED, f"{_kb(held[first])} -> {_kb(held[end])} saved for backward, "
                                               f"alive and never used, at steps {steps}")]
        out.append(Finding("grad-inference", Status.FAIL, message, where=where, evidence=evidence,
                           hint="Run it under `with torch.no_grad():` (or `torch.inference_mode()`), or keep "
                                "`.detach()` of what it returns."))
    return out


def _waste_findings(censuses: list, series: dict, failed: set, codes: dict) -> list[Finding]:
    """WARN: a call run with autograd on at least twice after the first step boundary, that backward
    never reached: activations saved for nothing."""
    out = []
    last = censuses[-1]
    for where in last.get("calls", {}):
        if where in failed or len(censuses) < 2:
            continue
        # from the first step boundary on: a probe forward in a constructor is setup, not waste per step
        stats = _calls_between(censuses, where, 0, len(censuses) - 1)
        total = last.get("calls", {})[where]
        if stats["calls"] < 2 or total.get("backward", 0):
            continue
        per_call = stats["saved"] / stats["calls"]
        if per_call <= 0:
            continue
        code = f" (`{codes[where]}`)" if codes.get(where) else ""
        alive = [max(p[1]["held"], p[1]["bytes"]) for p in series.get(where, [])]
        if any(alive) or any(p[1]["nodes"] for p in series.get(where, [])):
            after = (f"The census saw {_kb(max(alive))} of its activations alive at a step boundary (not "
                     "growth): memory held and time wasted.")
        else:
            after = "Nothing from it was alive at a step boundary (not growth), but it is wasted memory and time."
        out.append(Finding("grad-inference", Status.WARN,
                           f"observed: the call at {where}{code} ran {stats['calls']} times after the first "
                           f"optimizer step with autograd on and backward never reached it: each call saves "
                           f"{_kb(per_call)} of activations for a backward that never comes. {after}", where=where,
                           evidence=[Step(where, Role.BORN, f"{stats['calls']} calls with autograd on after the "
                                                            "first optimizer step"),
                                     Step(where, Role.OBSERVED, "backward never reached their outputs")],
                           hint="Run it under `with torch.no_grad():` (or `torch.inference_mode()`)."))
    return out


# -- cuda-visible-devices-late --------------------------------------------------------------------


def cvd_findings(obs: Observed) -> list[Finding]:
    out, before = [], []
    for event in obs.events:
        if event.kind == "cuda":
            before.append(event)
        elif event.kind == "env-set" and before and event.get("name") == "CUDA_VISIBLE_DEVICES":
            locking = [e for e in before if e.get("effect") in ("init", "use")]
            first = (locking or before)[0]
            if locking:
                status, effect = Status.FAIL, ("initialises CUDA on a GPU machine, so the setting has no effect: "
                                                "every GPU stays visible")
            else:
                status, effect = Status.WARN, ("read the GPU count before it (without initialising CUDA): what "
                                               "the script computed from that count is stale")
            evidence = [*_step(first.where, Role.CUDA_INIT, f"torch.cuda {first.get('call')}"),
                        *_via_step(first.get("via")),
                        *_step(event.where, Role.ENV_SET, f"CUDA_VISIBLE_DEVICES={event.get('value')!r}")]
            out.append(Finding(
                "cuda-visible-devices-late", status,
                f"observed: CUDA_VISIBLE_DEVICES={event.get('value')!r} is set at {_at(event)}, after "
                f"torch.cuda {first.get('call')} at {_at(first)}, which {effect}.",
                where=event.where, evidence=evidence,
                hint="Set CUDA_VISIBLE_DEVICES before anything queries CUDA: first lines of the script, or "
                     "in the shell (`CUDA_VISIBLE_DEVICES=0 python train.py`)."))
    return out


# -- multi-gpu-batch ------------------------------------------------------------------------------


def _first_step_examples(obs: Observed) -> int:
    censuses = obs.of("census")
    return censuses[0].get("examples", 0) if censuses else 0


def _given_text(trainer) -> str:
    """``per_device_train_batch_size=2 x 2 GPUs`` (``x gradient_accumulation_steps=K`` when K > 1)."""
    text = f"per_device_train_batch_size={trainer.get('per_device')} x {trainer.get('n_gpu')} GPUs"
    if (trainer.get("accumulation") or 1) > 1:
        text += f" x gradient_accumulation_steps={trainer.get('accumulation')}"
    return text


def _late_settings(obs: Observed) -> list:
    """The user's CUDA_VISIBLE_DEVICES writes made after CUDA initialised: on a GPU machine they
    leave every GPU visible (the simulated count ignores them the same way)."""
    out, initialised = [], False
    for event in obs.events:
        if event.kind == "cuda" and event.get("effect") in ("init", "use"):
            initialised = True
        elif event.kind == "env-set" and event.get("name") == "CUDA_VISIBLE_DEVICES" and initialised:
            out.append(event)
    return out


def refused(obs: Observed):
    """(the Trainer record, the crash) when a run with several simulated GPUs reached no optimizer
    step and died at the user's line that built a Trainer given more than one GPU (trl refuses
    nn.DataParallel there, after ``Trainer.__init__`` returned); else None."""
    if obs.steps or not obs.gpus or obs.gpus < 2:
        return None
    crashes = obs.of("crash")
    for trainer in obs.of("trainer"):
        if (trainer.get("n_gpu") or 0) > 1 and crashes and crashes[-1].where == trainer.where:
            return trainer, crashes[-1]
    return None


def _stepped_finding(obs: Observed, many: int, one: int) -> Finding:
    """Both runs reached a step: the examples counted in each run's first optimizer step."""
    reads, configs = obs.of("gpu-count"), obs.of("trainer-config")
    where = configs[0].where if configs else reads[0].where if reads else None
    read = f" The script reads the count at {_at(reads[0])}." if reads else ""
    evidence = _step(reads[0].where, Role.CONFIG, f"torch.cuda.device_count() returned {obs.gpus} (simulated)") \
        if reads else []
    if configs:
        c = configs[0]
        read += (f" {c.get('config')} built at {_at(c)}: per_device_train_batch_size={c.get('per_device')} x "
                 f"{obs.gpus} GPUs (the Trainer wraps the model in nn.DataParallel when run with plain python).")
        evidence += _step(c.where, Role.CONFIG, f"{c.get('config')}(per_device_train_batch_size="
                                                f"{c.get('per_device')})")
    evidence += _step(where, Role.OBSERVED, f"{one} examples in the first optimizer step with 1 GPU, {many} with "
                                            f"{obs.gpus}")
    return Finding(
        "multi-gpu-batch", Status.FAIL,
        f"observed: examples per optimizer step depend on the number of visible GPUs: {one} with 1 GPU, {many} "
        f"with {obs.gpus} (simulated: your own torch.cuda.device_count() calls and the Trainer's n_gpu said {obs.gpus}; examples "
        f"counted at the training forward, backpropagated, in the first optimizer step).{read}",
        where=where, evidence=evidence, hint=GPU_HINT)


GPU_HINT = ("Fix the global batch (examples per optimizer step) and derive the per-device batch from it; "
            "launch with torchrun for several GPUs.")


def _given_finding(obs: Observed, single: Observed, trainer) -> Finding | None:
    """The run with N GPUs reached no optimizer step: what its Trainer was given, against the
    examples of the first step with 1 GPU (or, where that run reached no step either, what its
    Trainer was given). A crash at the Trainer line is told here, not as a separate failure."""
    one = _first_step_examples(single)
    counted = "in the first optimizer step with 1 GPU"
    if not one:
        ones = [t for t in single.of("trainer") if (t.get("n_gpu") or 0) <= 1 and t.get("examples")]
        one = ones[0].get("examples") if ones else 0
        counted = "given to the Trainer with 1 GPU (that run reached no optimizer step either)"
    given = trainer.get("examples") or 0
    if not one or given <= one or trainer.get("accelerator"):
        # an Accelerator made before the Trainer: a script for `accelerate launch`, where each
        # process has one GPU (the static analysis reads it the same way)
        return None
    config_where = trainer.get("config_where")
    config = trainer.get("config")
    built = (f" from the {config} built at {config_where}"
             f"{' (`' + trainer.get('config_code') + '`)' if trainer.get('config_code') else ''}"
             if config_where else f" ({config} built outside your code)")
    call = f"{trainer.where} (`{trainer.get('code')}`)" if trainer.get("code") else trainer.where
    message = (f"observed: the {trainer.get('trainer')} built at {call} was given {given} examples per optimizer "
               f"step ({_given_text(trainer)}){built}; {one} examples {counted}.")
    evidence = _step(config_where, Role.CONFIG, f"{config}(per_device_train_batch_size={trainer.get('per_device')})")
    evidence += _step(trainer.where, Role.PASSES, f"`{trainer.get('trainer')}(...)` given {given} examples per "
                                                  f"optimizer step ({_given_text(trainer)})")
    late = _late_settings(obs)
    if late:
        message += (f" CUDA_VISIBLE_DEVICES={late[0].get('value')!r} was set at {late[0].where} after CUDA was "
                    f"initialised: on a GPU machine that changes nothing, every GPU stays visible.")
        evidence += _step(late[0].where, Role.ENV_SET, f"CUDA_VISIBLE_DEVICES={late[0].get('value')!r}, too late")
    refusal = refused(obs)
    if refusal is not None:
        crash = refusal[1]
        library = (trainer.get("module") or "the library").split(".")[0]
        said = re.split(r"(?<=[.!?])\s", (crash.get("message") or "").strip())[0].rstrip(".")[:300]
        message += (f" With {obs.gpus} GPUs the run reached no optimizer step: {library} refused the "
                    f"{trainer.get('trainer')} at {crash.where} ({crash.get('type')}{': ' + said if said else ''}).")
        evidence += _step(crash.where, Role.OBSERVED, f"{library} raised {crash.get('type')}")
    else:
        message += f" With {obs.gpus} GPUs the run reached no optimizer step."
    message += (f" Simulated, no GPU ran: the Trainer's n_gpu (and any torch.cuda.device_count() call of your own) "
                f"said {obs.gpus}; {given} is what the Trainer computed from that (train_batch_size x "
                "gradient_accumulation_steps), not examples counted in a step. A Trainer that accepts nn.DataParallel "
                f"(transformers' own) takes {given} per optimizer step on such a machine"
                f"{'; this one stops there instead' if refusal is not None else ''}.")
    evidence += _step(config_where or trainer.where, Role.OBSERVED,
                      f"{one} examples with 1 GPU, {given} given with {obs.gpus} (simulated)")
    status = Status.FAIL
    if trainer.get("device_map"):
        # transformers treats a model spread over several GPUs as model-parallel (n_gpu 1): where
        # it lands is the GPU machine's to say, and on a CPU it lands on the CPU
        status = Status.WARN
        message += (" The model was loaded with a device_map: spread over the GPUs, the Trainer treats it as "
                    "model-parallel and takes one GPU's batch; on one GPU it multiplies. A CPU cannot tell which.")
    return Finding("multi-gpu-batch", status, message, where=config_where or trainer.where,
                   evidence=evidence, hint=GPU_HINT)


def gpu_findings(obs: Observed, single: Observed | None) -> list[Finding]:
    """Examples per optimizer step with N simulated GPUs against the same script with 1: counted
    in the first step of each run, or, where the N-GPU run reached no step, what its Trainer was
    given (``Trainer.__init__``'s record)."""
    if single is None or not obs.gpus or obs.gpus < 2:
        return []
    many, one = _first_step_examples(obs), _first_step_examples(single)
    if many:
        return [_stepped_finding(obs, many, one)] if one and many > one else []
    for trainer in obs.of("trainer"):
        if (trainer.get("n_gpu") or 0) > 1:
            found = _given_finding(obs, single, trainer)
            if found is not None:
                return [found]
    return []


# -- the run itself -------------------------------------------------------------------------------


def run_findings(obs: Observed, attached: set[str]) -> list[Finding]:
    out, done = [], set()
    for blocked in obs.of("write-blocked"):
        key = (blocked.get("op"), blocked.get("path"), blocked.where)
        if key in done:
            continue
        done.add(key)
        out.append(Finding(WRITES, Status.WARN,
                           f"blocked {blocked.get('op')} of {blocked.get('path')} at {_at(blocked)}: outside the "
                           "run's sandbox; the script got a PermissionError there", where=blocked.where,
                           evidence=_step(blocked.where, Role.OBSERVED, f"{blocked.get('op')} blocked"),
                           hint="Nothing was changed; the observed run never writes the project's files."))
    ends, crashes = obs.of("end"), obs.of("crash")
    if crashes:
        crash = crashes[-1]
        if crash.where not in attached:
            out.append(Finding(RUN, Status.FAIL,
                               f"the script crashed at {_at(crash)} after {obs.steps} optimizer step(s): "
                               f"{crash.get('type')}: {crash.get('message')}", where=crash.where,
                               evidence=_step(crash.where, Role.OBSERVED, f"{crash.get('type')} raised"),
                               hint=f"Fix the crash; its output is in {obs.sandbox / 'output.log'}."))
    elif obs.timed_out:
        out.append(Finding(RUN, Status.WARN, f"stopped at the time limit ({obs.timeout_s:g} s) after "
                           f"{obs.steps} optimizer step(s); the findings come from what ran before",
                           hint="Pass a longer --timeout, or smaller data / fewer workers."))
    elif ends:
        end = ends[-1]
        how = end.get("how")
        if how == "exited" and end.get("code") not in ("None", "0"):
            out.append(Finding(RUN, Status.WARN, f"the script exited with code {end.get('code')} after "
                               f"{obs.steps} optimizer step(s)", hint="Check its arguments (after `--`)."))
        else:
            said = "stopped by the doctor" if how == "stopped" else "the script ended by itself"
            out.append(Finding(RUN, Status.PASS, f"ran {obs.steps} optimizer step(s) ({said})"))
    else:
        out.append(Finding(RUN, Status.ERROR, f"the child process ended without a report (exit code "
                           f"{obs.returncode})", hint=f"See {obs.sandbox / 'output.log'}."))
    return out


def findings(obs: Observed, single: Observed | None = None) -> list[Finding]:
    """The run's findings; ``single``: the same script run with 1 simulated GPU (with --gpus N)."""
    dtype = dtype_findings(obs)
    attached = {f.where for f in dtype if f.status is Status.FAIL}
    grad = grad_findings(obs)
    cvd = cvd_findings(obs)
    gpu = gpu_findings(obs, single) if single is not None else []
    refusal = refused(obs)
    if gpu and refusal is not None:
        attached.add(refusal[1].where)  # the Trainer line's crash is told in the multi-gpu-batch finding
    out = run_findings(obs, attached)
    checks = [("dtype-mismatch", dtype), ("grad-inference", grad), ("cuda-visible-devices-late", cvd)]
    if single is not None:
        checks.append(("multi-gpu-batch", gpu))
    for check, found in checks:
        if found:
            out += found
        elif check == "grad-inference" and obs.steps < 3:
            out.append(Finding(check, Status.SKIP, f"not observed: {obs.steps} optimizer step(s) ran, growth needs 3"))
        else:
            out.append(Finding(check, Status.PASS, f"nothing observed in {obs.steps} optimizer step(s)"))
    return out
