"""The one place that maps exceptions to messages and exit codes: our errors to 1 / 2 / 130 with
their hint, Ctrl-C to 130, a fault of the machine (``runtime.faults``: disk full, permission denied,
out of memory) to its message (exit 1), anything else to "internal error" (exit 1). A traceback only with
``OHLORA_DEBUG=1``. Imports typer, rich and the standard library only."""

from __future__ import annotations

import functools
import os
import traceback

import typer


def report(exc: BaseException, code: int, message: str | None = None, hint: str | None = None) -> None:
    from rich.markup import escape

    from ..console import err

    if os.environ.get("OHLORA_DEBUG") == "1":
        traceback.print_exception(exc)
    label = {2: "error", 130: "interrupted"}.get(code, "failed")
    err.print(f"[bold red]{label}:[/bold red] {escape(message or str(exc))}", highlight=False, soft_wrap=True)
    hint = hint or getattr(exc, "hint", None)
    if hint:
        err.print(f"[dim]hint:[/dim] {escape(hint)}", highlight=False, soft_wrap=True)


def guard(fn):
    """Run a command body; render what it raises and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import OhloraError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except OhloraError as exc:
            report(exc, exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            report(exc, 130, "stopped by Ctrl-C")
            raise typer.Exit(130) from None
        except Exception as exc:  # a fault of the machine, or a bug of ours: say so, exit 1, traceback only on request
            from ..runtime.faults import describe

            described = describe(exc)
            if described is not None:  # disk full, permission denied, out of memory, ...: not a bug
                report(exc, 1, *described)
                raise typer.Exit(1) from None
            report(exc, 1, f"internal error: {type(exc).__name__}: {exc}",
                   hint="This is a bug in ohlora; rerun with OHLORA_DEBUG=1 to see the traceback.")
            raise typer.Exit(1) from None

    return wrapper
