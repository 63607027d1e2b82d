"""The doctor's result: findings grouped by target, rendered as a rich table or one JSON object.

Computation and rendering are apart: ``Report`` is data; ``render`` draws it; ``to_dict`` is the
JSON contract ``{"ok", "findings", "summary"}`` (README, "`ohlora doctor`").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .registry import Finding, Status

STYLE = {
    Status.PASS: "bold green",
    Status.WARN: "bold yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIP: "dim",
}


MARK = {Status.PASS: "[bold green]\\[ok][/]", Status.WARN: "[bold yellow]\\[!][/]", Status.FAIL: "[bold red]\\[x][/]",
        Status.ERROR: "[bold magenta]\\[x][/]", Status.SKIP: "[dim]\\[-][/]"}
WORST = [Status.ERROR, Status.FAIL, Status.WARN, Status.PASS, Status.SKIP]  # the mark of an area: its worst row


@dataclass
class Section:
    title: str  # "environment", "recipe recipes/gan-demo.yaml", "script train.py"
    findings: list[Finding] = field(default_factory=list)
    # For a recipe checked by ``ohlora doctor``: whether its launch would start, in words
    # ("would start", "would need --resume: ..."), and whether it would.
    launch: str | None = None
    starts: bool | None = None
    recipe: Any = None  # the recipe model of a recipe section

    def counts(self) -> dict[Status, int]:
        return {status: sum(f.status is status for f in self.findings) for status in Status}


@dataclass
class Report:
    sections: list[Section] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.sections for f in s.findings]

    @property
    def ok(self) -> bool:
        """No failure and no check that crashed."""
        return not any(f.status in (Status.FAIL, Status.ERROR) for f in self.findings)

    @property
    def summary(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for finding in self.findings:
            counts[finding.status.value] += 1
        return counts

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.FAIL]

    def exit_code(self, *, strict: bool = False) -> int:
        if not self.ok:
            return 1
        if strict and any(f.status is Status.WARN for f in self.findings):
            return 1
        return 0

    def to_dict(self) -> dict:
        data = {"ok": self.ok, "findings": [f.to_dict() for f in self.findings], "summary": self.summary}
        launches = [{"target": s.title, "starts": s.starts, "launch": s.launch} for s in self.sections if s.launch]
        if launches:
            data["launch"] = launches
        return data


def _counts_text(counts: dict[Status, int]) -> str:
    words = {Status.PASS: "passed", Status.WARN: "warning", Status.FAIL: "failure", Status.ERROR: "error",
             Status.SKIP: "skipped"}
    parts = []
    for status in (Status.PASS, Status.FAIL, Status.ERROR, Status.WARN, Status.SKIP):
        n = counts[status]
        if n:
            word = words[status] + ("s" if n != 1 and status in (Status.WARN, Status.FAIL, Status.ERROR) else "")
            parts.append(f"{n} {word}")
    return ", ".join(parts) or "nothing checked"


def render(report: Report, console: Console, *, verbose: bool = False) -> None:
    """One line per area (flutter doctor's style), every finding that is not a PASS in full with its
    fix, whether a checked recipe's launch would start, and the verdict. ``verbose``: every row of
    every area, as a table."""
    if verbose:
        _render_tables(report, console)
    else:
        _render_summary(report, console)
    _render_verdict(report, console)


def _render_summary(report: Report, console: Console) -> None:
    for section in report.sections:
        counts = section.counts()
        worst = next(s for s in WORST if counts[s]) if section.findings else Status.SKIP
        console.print(f"{MARK[worst]} {escape(section.title)}: {_counts_text(counts)}", highlight=False)
        problems = [f for f in section.findings if f.status is not Status.PASS]
        if problems:
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True, width=3)
            grid.add_column(no_wrap=True)
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold", ratio=1)
            for finding in problems:
                grid.add_row("", f"[{STYLE[finding.status]}]{finding.status.value.upper()}[/]", finding.check,
                             _finding_text(finding))
            console.print(grid)
        if section.launch:
            style = "green" if section.starts else "yellow"
            console.print(f"    launch: [{style}]{escape(section.launch)}[/]", highlight=False)


def _finding_text(finding: Finding) -> str:
    text = escape(finding.message)
    if finding.where:
        text = f"[bold]{escape(finding.where)}[/bold]  {text}"
    if finding.status is not Status.PASS and finding.hint:
        text += f"\n[cyan]fix:[/cyan] {escape(finding.hint)}"
    return text


def _render_verdict(report: Report, console: Console) -> None:
    counts = report.summary
    parts = [f"[{STYLE[s]}]{counts[s.value]} {s.value}[/]" for s in Status if counts[s.value]]
    warnings = counts[Status.WARN.value]
    if not report.ok:
        verdict = "[bold red]problems found[/]"
    elif warnings:
        verdict = f"[bold green]ok[/], [bold yellow]but {warnings} warning{'s' if warnings != 1 else ''} above[/]"
    else:
        verdict = "[bold green]ok[/]"
    more = "" if not any(f.status is Status.PASS for f in report.findings) else "; -v lists every check"
    console.print(f"doctor: {verdict} ({', '.join(parts) or 'nothing checked'}){more}", highlight=False)


def _render_tables(report: Report, console: Console) -> None:
    for section in report.sections:
        table = Table(title=section.title, title_justify="left", show_lines=False, expand=False)
        table.add_column("status", no_wrap=True)
        table.add_column("check", no_wrap=True)
        table.add_column("finding", overflow="fold", ratio=1)
        for finding in section.findings:
            table.add_row(f"[{STYLE[finding.status]}]{finding.status.value.upper()}[/]", finding.check,
                          _finding_text(finding))
        console.print(table)
        if section.launch:
            style = "green" if section.starts else "yellow"
            console.print(f"launch: [{style}]{escape(section.launch)}[/]", highlight=False)
