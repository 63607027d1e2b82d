"""The doctor's result: findings grouped by target, rendered as a rich table or one JSON object.

Computation and rendering are apart: ``Report`` is data; ``render`` draws it; ``to_dict`` is the
JSON contract ``{"ok", "findings", "summary"}`` (README, "`ohlora doctor`").
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Section:
    title: str  # "environment", "recipe recipes/gan-demo.yaml", "script train.py"
    findings: list[Finding] = field(default_factory=list)


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
        return {"ok": self.ok, "findings": [f.to_dict() for f in self.findings], "summary": self.summary}


def render(report: Report, console: Console) -> None:
    for section in report.sections:
        table = Table(title=section.title, title_justify="left", show_lines=False, expand=False)
        table.add_column("status", no_wrap=True)
        table.add_column("check", no_wrap=True)
        table.add_column("finding", overflow="fold", ratio=1)
        for finding in section.findings:
            text = escape(finding.message)
            if finding.where:
                text = f"[bold]{escape(finding.where)}[/bold]  {text}"
            if finding.status is not Status.PASS and finding.hint:
                text += f"\n[cyan]fix:[/cyan] {escape(finding.hint)}"
            table.add_row(f"[{STYLE[finding.status]}]{finding.status.value.upper()}[/]", finding.check, text)
        console.print(table)
    counts = report.summary
    parts = [f"[{STYLE[s]}]{counts[s.value]} {s.value}[/]" for s in Status if counts[s.value]]
    verdict = "[bold green]ok[/]" if report.ok else "[bold red]problems found[/]"
    console.print(f"doctor: {verdict} ({', '.join(parts) or 'nothing checked'})", highlight=False)
