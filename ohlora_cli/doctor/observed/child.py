"""The child process of ``ohlora doctor SCRIPT.py --run``: install the instruments, run the
script unchanged, stop it after N optimizer steps, end with ``os._exit``.

``python -m ohlora_cli.doctor.observed.child CONFIG.json``; the parent (``launch``) writes the
config and reads the events this process streams to ``events.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


class StopRun(BaseException):
    """Raised by the step hook after N optimizer steps: a BaseException, so it unwinds through
    the script's and the libraries' ``except Exception``."""


def _crash_site(exc: BaseException, user) -> dict:
    """The innermost user frame of the traceback, and the library frame below it."""
    where = code = via = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name in user:
            where, code, via = user.place(name, line), None, None
            import linecache

            code = linecache.getline(name, line).strip() or None
        elif where is not None and via is None and "ohlora_cli" not in name:
            via = f"{os.path.basename(name)}:{line} ({frame.f_code.co_name})"
    return {"where": where, "code": code, "via": via}


def main(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    from .events import EventLog
    from .frames import UserFiles

    emit = EventLog(config["events"]).emit
    folder = os.path.dirname(os.path.realpath(config["script"]))
    user = UserFiles([folder, *config.get("roots", [])], os.getcwd())
    sys.dont_write_bytecode = True
    guard = _install_guard(config, folder, emit, user)
    observer, graphs = _install_instruments(config, emit, user, guard)
    from .coverage import Lines

    lines = Lines(config.get("sites", []), emit)  # installed just before the script's first line
    state = _install_step_hook(int(config["steps"]), emit, user, graphs, lines)
    sys.argv = [config["script"], *config["args"]]
    sys.path[0] = folder
    emit("start", script=config["script"], args=config["args"], shim=config["shim"], pid=os.getpid())
    code = _run_script(config["script"], observer, guard, emit, user, state, lines)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)  # no atexit handlers, no end-of-training saves


def _install_guard(config: dict, folder: str, emit, user):
    """The write guard, before torch: nothing may write the user's files from here on."""
    from .sandbox import Guard

    guard = Guard(config["sandbox"], [folder, os.getcwd(), *config.get("roots", [])], emit, user)
    guard.install()
    return guard


def _install_instruments(config: dict, emit, user, guard):
    """The torch instruments (this imports torch): native writers, CUDA, graphs, the mode."""
    from .devices import Cuda
    from .graphs import Graphs
    from .tensors import Observer, patch_from_numpy

    guard.patch_native_writers()
    cuda = Cuda(emit, user, shim=config["shim"], gpus=config.get("gpus"))
    cuda.install()
    if config.get("gpus") is not None and "LOCAL_RANK" not in os.environ:
        from .devices import simulate_trainer_gpus

        simulate_trainer_gpus(cuda)
    graphs = Graphs(emit, user)
    graphs.install()
    observer = Observer(emit, user, graphs, cuda)
    patch_from_numpy(observer)
    observer.skip_optimizer_steps()  # before the script: its optimizers step with the mode off
    return observer, graphs


def _install_step_hook(limit: int, emit, user, graphs, lines) -> dict:
    """Counts the steps of the first optimizer that steps; at each boundary the census and the
    line counts; after ``limit`` steps, StopRun."""
    state = {"first": None, "steps": 0}

    def step_hook(optimizer, _args, _kwargs):
        if state["first"] is None:
            state["first"] = id(optimizer)
            emit("optimizer", type=type(optimizer).__name__, **user.site())
        if id(optimizer) != state["first"]:
            return
        state["steps"] += 1
        graphs.census(state["steps"])
        lines.flush(state["steps"])
        emit("step", step=state["steps"])
        if state["steps"] >= limit:
            raise StopRun

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(step_hook)
    return state


def _run_script(script: str, observer, guard, emit, user, state: dict, lines) -> int:
    """Run the script under the mode; how it ended is an event. Returns the exit code."""
    import runpy

    code = 0
    lines.install()
    try:
        with observer:
            runpy.run_path(script, run_name="__main__")
        end = {"how": "finished"}
    except StopRun:
        end = {"how": "stopped"}
    except SystemExit as exc:
        end = {"how": "exited", "code": str(exc.code)}
    except BaseException as exc:  # the script's own failure is an observation
        sys.settrace(None)
        guard.active = False
        end = None
        emit("crash", type=type(exc).__name__, message=str(exc)[:2000], steps=state["steps"],
             **_crash_site(exc, user))
        traceback.print_exc()
        code = 1
    sys.settrace(None)
    lines.flush(state["steps"])
    if end is not None:
        emit("end", steps=state["steps"], **end)
    return code


if __name__ == "__main__":
    main(sys.argv[1])
