"""``ohlora chat RUN``: talk to a trained LLM run.

1. The run folder is read (``recipe.yaml``: template, end marker, ``model.path``) and its weights
   loaded (``llm.chat.load``: base + ``adapter/``, or ``merged/``). With ``--backend unsloth``,
   unsloth is imported first, before transformers, as it requires.
2. ``--prompt TEXT``: one answer, alone on stdout (scriptable). Otherwise the interactive loop:
   a line in, the answer streamed out as it is generated, the conversation kept per the run's
   template; ``/reset`` starts over, ``/exit``, Ctrl-D or Ctrl-C at the prompt leave (exit 0);
   Ctrl-C during an answer stops that answer and keeps the session.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..console import err, info, out, warn
from ..errors import BadInputError

COMMANDS = "/reset starts the conversation over, /exit (or Ctrl-D) leaves"


def run(run_path: str, *, prompt: str | None, max_new_tokens: int | None, temperature: float, top_p: float,
        seed: int, backend: str | None, weights: str, base: str | None, device: str) -> None:
    if backend == "unsloth":
        # unsloth writes the sources it generates (GPU) to ./unsloth_compiled_cache unless told
        # otherwise: keep them in the run folder, as train-llm does, not in the current directory.
        folder = Path(run_path)
        folder = folder.parent if folder.name in ("adapter", "merged") else folder
        os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str((folder / "unsloth_compiled_cache").resolve()))
        import unsloth  # noqa: F401  (before transformers / peft: it patches them when imported)
    from ..llm import chat as engine
    from ..runtime.seeding import seed_everything

    model = engine.load(run_path, backend=backend, weights=weights, base=base, device=device)
    conversation = engine.Conversation(model, max_new_tokens or model.cfg.generate.max_new_tokens)
    seed_everything(seed)
    settings = {"temperature": temperature, "top_p": top_p}
    if prompt is not None:
        if not prompt.strip():
            raise BadInputError("--prompt: the message is empty")
        result = engine.answer(model, conversation.prompt(prompt.strip()), max_new_tokens=conversation.max_new_tokens,
                               **settings)
        _write(result.text + "\n")
        return
    info(f"chat with {run_path}: {model.description}, "
         f"{'greedy' if temperature == 0 else f'temperature {temperature:g}, top-p {top_p:g}'}, "
         f"answers up to {conversation.max_new_tokens} tokens")
    info(f"[dim]Type a message; {COMMANDS}.[/dim]")
    interact(model, conversation, settings)


def interact(model, conversation, settings: dict) -> None:
    """The read-answer loop (see the module docstring)."""
    from ..llm.chat import answer

    _line_editing()
    while True:
        try:
            line = _read("> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt: leave
            _write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command = text.split()[0].lower()
            if command in ("/exit", "/quit", "/bye"):
                return
            if command == "/reset":
                conversation.reset()
                info("[dim](conversation cleared)[/dim]")
            else:
                info(f"unknown command {command}: {COMMANDS}")
            continue
        try:
            rendered = conversation.prompt(text)
        except BadInputError as exc:
            warn(str(exc))
            continue
        if conversation.dropped:
            info(f"[dim](the {conversation.dropped} earliest turn(s) no longer fit the model's context: left "
                 "out)[/dim]")
        try:
            result = answer(model, rendered, max_new_tokens=conversation.max_new_tokens, on_text=_write, **settings)
        except KeyboardInterrupt:
            _write("\n")
            info("[dim](stopped; this answer is not kept)[/dim]")
            continue
        _write("\n")
        conversation.add(text, result.text)
        info(f"[dim]{result.new_tokens} tokens in {result.seconds:.2f} s ({result.tokens_per_s:.1f} tokens/s), "
             f"stopped by {result.stopped.replace('_', ' ')}[/dim]")


def _write(text: str) -> None:
    """Answer text on the real stdout, as it is (no markup, emoji or wrapping), at once."""
    out.file.write(text)
    out.file.flush()


def _read(prompt: str) -> str:
    """``input()`` on the terminal itself (the command's window redirects sys.stdout for library
    output; input() edits lines with readline only on the real streams)."""
    with contextlib.redirect_stdout(out.file), contextlib.redirect_stderr(err.file):
        return input(prompt)


def _line_editing() -> None:
    with contextlib.suppress(ImportError):  # arrow keys and history within the session, where readline exists
        import readline  # noqa: F401
