"""Library output during a command: the terminal shows ohlora's own lines, tables and progress
bar; what the libraries print (datasets' and transformers' tqdm bars, their log records, Python
warnings, banners) goes to ``output_dir/train.log``. ``--verbose`` shows it live as well.

How: for the length of a command, ``sys.stdout`` and ``sys.stderr`` are redirected
(``contextlib.redirect_stdout`` / ``redirect_stderr``) to a ``LibraryOutput`` stream, after
ohlora's rich consoles were pinned to the real streams. That is where libraries write: tqdm
bars take ``sys.stderr`` when they are created, ``warnings.showwarning`` and logging's
last-resort handler when they write, and the library loggers' stream handlers (transformers,
datasets) when the library is first imported, which in a command happens inside the window
(``ohlora_cli.cli`` imports none of them). Until the run has its ``output_dir`` (the preflight,
a dry run, ``ohlora doctor``) the text is held in memory; ``log_to(path)`` writes it to the log
and appends from then on. Held text that never reaches a log is dropped with a one-line note
saying how to see it. Imports only the standard library and rich.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

_current: LibraryOutput | None = None


class LibraryOutput(io.TextIOBase):
    """What libraries see as ``sys.stdout`` / ``sys.stderr`` during a command."""

    def __init__(self, terminal, *, verbose: bool):
        super().__init__()
        self.terminal, self.verbose = terminal, verbose
        self.held: list[str] = []
        self.file = None
        self.path: Path | None = None
        self.done = False

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if self.done:  # a handler or bar created during the window and used after it: pass it on
            target = sys.stderr if sys.stderr is not self else sys.__stderr__
            return target.write(text) if target is not None else len(text)
        if self.verbose:
            self.terminal.write(text)
            self.terminal.flush()
        if self.file is not None:
            self.file.write(text)
        else:
            self.held.append(text)
        return len(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def log_to(self, path: Path) -> None:
        if self.file is not None:
            return
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed when the window closes)
        self.path = path
        self.file.write("".join(self.held))
        self.file.flush()
        self.held.clear()

    def finish(self) -> str:
        """Close the log; returns the held text that never reached one."""
        self.done = True
        if self.file is not None:
            self.file.close()
        text, self.held = "".join(self.held), []
        return text


@contextlib.contextmanager
def library_output(*, verbose: bool = False):
    """The window of one command (see the module docstring)."""
    global _current
    from ..console import err, info, out

    if _current is not None:  # nested (a command calling another): one window is enough
        yield _current
        return
    verbose = verbose or os.environ.get("OHLORA_DEBUG") == "1"  # debugging: show everything (tracebacks too)
    out.file, err.file = sys.stdout, sys.stderr  # ours keep the terminal (both are created unpinned)
    stream = LibraryOutput(sys.stderr, verbose=verbose)
    _current = stream
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield stream
    finally:
        _current = None
        dropped = stream.finish()
        out.file = err.file = None  # follow sys.stdout / sys.stderr again
        if dropped.strip() and not verbose:
            info("[dim](library output not shown; --verbose shows it)[/dim]")


def log_to(path: str | Path, *, announce: bool = True) -> Path | None:
    """Send this command's library output to ``path`` (appending), from the start of the command.
    Says where, once (not again in the ranks of a relaunch or in a worker process: ``announce``).
    No-op outside a window (ohlora used from Python)."""
    path = Path(path)
    if _current is None or _current.file is not None or not path.parent.is_dir():
        return None  # (a torchrun rank whose output_dir rank 0 has not made yet keeps holding)
    _current.log_to(path)
    if announce and not _current.verbose and os.environ.get("OHLORA_RELAUNCHED") != "1":
        from ..console import info

        info(f"[dim]library messages: {path} (--verbose shows them here)[/dim]")
    return path


def verbose() -> bool:
    """Whether the current command runs with --verbose (relaunches and workers pass it on)."""
    return _current is not None and _current.verbose
