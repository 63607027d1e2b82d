"""``ohlora report RUN [RUN ...] [-o FILE]``: (re)build a run's report.html, or compare runs.

One run: ``RUN/report.html`` (or ``-o``). Several: one page with each curve drawn per run, the recipe
keys that differ and each run's latest grid or answers, written to ``-o``. A RUN must be an ohlora
run folder; ``-o`` writes a new file, or rewrites a page this command made, never anything else.
"""

from __future__ import annotations

from pathlib import Path

from ..console import say
from ..errors import BadInputError


def run(runs: list[str], output: Path | None) -> None:
    from ..runtime.builds import RUN, read_marker
    from ..runtime.files import write_text
    from ..runtime.report import MARK, render_compare, write_report
    from ..runtime.run import REPORT, STATS

    folders = []
    for name in runs:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise BadInputError(f"{folder}: no such run folder", hint="Pass a run's output_dir (it holds stats.jsonl).")
        if (read_marker(folder) or {}).get("made_by") != RUN or not (folder / STATS).is_file():
            raise BadInputError(f"{folder}: not an ohlora run folder with stats (no .ohlora.json run marker or "
                                f"no {STATS})", hint="Pass the output_dir of a train-gan or train-llm run.")
        folders.append(folder)
    if output is None and len(folders) > 1:
        raise BadInputError("comparing several runs needs -o FILE.html (where to write the page)",
                            hint=f"e.g. ohlora report {' '.join(runs)} -o compare.html")
    if output is not None:
        target = output.expanduser()
        if target.is_dir():
            raise BadInputError(f"-o {target}: a folder, not a file", hint="Name an .html file to write.")
        if target.exists() and MARK not in target.read_text(encoding="utf-8", errors="replace")[:200]:
            raise BadInputError(f"-o {target}: the file exists and was not made by ohlora report; it is left as it is",
                                hint="Name a new file.")
    if len(folders) == 1 and (output is None or output.expanduser() == folders[0] / REPORT):
        say(f"report: {write_report(folders[0])}")
        return
    from ..runtime.report import render_run

    page = render_run(folders[0]) if len(folders) == 1 else render_compare(folders)
    write_text(target, page)
    say(f"report: {target}")
