"""Rich consoles: results go to stdout, diagnostics and progress to stderr."""

from __future__ import annotations

from rich.console import Console

out = Console()
err = Console(stderr=True)


def info(message: str) -> None:
    err.print(message, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
