"""Rich consoles: results go to stdout, diagnostics and progress to stderr.

Messages are printed with soft wrapping: rich never breaks a line inside a path or a
`file:line` reference, so messages stay greppable and clickable at any terminal width."""

from __future__ import annotations

from rich.console import Console

out = Console()
err = Console(stderr=True)


def say(message: str) -> None:
    """A result line on stdout (plain text: no markup, no highlighting)."""
    out.print(message, highlight=False, markup=False, soft_wrap=True)


def info(message: str) -> None:
    err.print(message, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
