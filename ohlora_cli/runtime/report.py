"""``report.html``: one self-contained page per run folder (or several side by side), readable
offline: the recipe, the preflight table, curves drawn from ``stats.jsonl`` with matplotlib (PNG,
inlined as base64), the latest grid and grids over time, label-control plots (GAN) or sample answers
beside the expected ones (LLM). No server, no network, no script.

``write_report(folder)`` (re)builds a run's page; the engines call ``ReportWriter.maybe`` at every
logging interval (throttled: a build costs about a second on a busy CPU) and ``write`` at the end.
``compare(folders, target)`` draws several runs into one page. matplotlib is imported on first use.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
import time
from pathlib import Path

from .files import write_text
from .run import DOCTOR, RECIPE, REPORT, RUN_INFO, STATS, RunFolder

MARK = "<!-- made by ohlora report -->"  # a page of ours: `ohlora report -o` rewrites only these
GRIDS_SHOWN = 8
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
.figs img{max-width:46%;margin:4px;border:1px solid #eee}.grids img{width:180px;image-rendering:pixelated;margin:3px}
.latest{width:min(100%,640px);image-rendering:pixelated}.pass{color:#070}.warn{color:#a60}.fail,.error{color:#b00}
.cols{display:flex;gap:1.5em;flex-wrap:wrap}.cols>div{flex:1;min-width:320px}"""


# ------------------------------------------------------------------------------ reading a run


def read_stats(path: Path) -> list[dict]:
    """The stats lines that parse (a line being appended, or damaged, is skipped)."""
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except OSError:
        pass
    return records


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def run_kind(folder: Path, stats: list[dict]) -> str:
    info = _read_json(folder / RUN_INFO) or {}
    if info.get("kind") in ("gan", "llm"):
        return info["kind"]
    return "gan" if any("kimg" in r for r in stats) else "llm"


def series(stats: list[dict], kind: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{chart title: {line name: [(x, y), ...]}} from the stats lines (x: kimg for the GAN, the
    optimizer step for the LLM)."""
    charts: dict[str, dict[str, list]] = {}

    def add(chart: str, name: str, x, y) -> None:
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y == y:  # y == y: not NaN
            charts.setdefault(chart, {}).setdefault(name, []).append((float(x), float(y)))

    for r in stats:
        if r.get("done"):
            continue
        if kind == "gan":
            x = r.get("kimg")
            for key, value in r.items():
                if key.endswith("_loss") or key == "r1":
                    add("losses (D / G)", key, x, value)
                elif key.startswith("label_control/") and key.endswith("/r") and key.count("/") == 2:
                    add("label control r per label", key.split("/")[1], x, value)
            add("images per second", "img/s", x, r.get("img_per_s"))
            add("D's AUROC (reals vs fakes)", "auroc", x, r.get("auroc"))
        else:
            x = r.get("step")
            add("loss", "train loss", x, r.get("loss"))
            add("loss", "eval loss", x, r.get("eval_loss"))
            add("learning rate", "learning_rate", x, r.get("learning_rate"))
            add("gradient norm", "grad_norm", x, r.get("grad_norm"))
            add("eval token accuracy", "eval_mean_token_accuracy", x, r.get("eval_mean_token_accuracy"))
    return charts


# ---------------------------------------------------------------------------------- drawing


def _keep_matplotlib_in(folder: Path) -> None:
    """matplotlib keeps a font cache and config in ~/.cache and ~/.config; a run writes only under
    its output_dir, so (unless MPLCONFIGDIR says otherwise) they go to ``folder/.matplotlib``."""
    if "matplotlib" not in sys.modules:
        os.environ.setdefault("MPLCONFIGDIR", str((Path(folder) / ".matplotlib").resolve()))


def _plot(title: str, lines: dict[str, list[tuple[float, float]]], xlabel: str) -> str:
    """One chart as an inlined PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=80)
    ax = fig.add_subplot()
    for name, points in lines.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, label=name, linewidth=1.2, marker="o" if len(xs) <= 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    if len(lines) > 1 or title.startswith("label control"):
        ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.16)  # fixed margins: tight_layout costs a draw
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _charts(charts: dict, xlabel: str) -> str:
    if not charts:
        return "<p>No stats lines yet.</p>"
    images = "".join(f'<img alt="{html.escape(title)}" data-chart="{html.escape(title)}" src="{_plot(title, lines, xlabel)}">'
                     for title, lines in charts.items())
    return f'<div class="figs">{images}</div>'


def _table(rows: list[list[str]], head: list[str] | None = None, classes: list[str] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _preflight(folder: Path) -> str:
    report = _read_json(folder / DOCTOR)
    if not isinstance(report, dict):
        return "<p>No preflight report (doctor.json): the run skipped the doctor.</p>"
    findings = report.get("findings") or []
    rows = [[str(f.get("status", "")).upper(), f.get("check", ""), f.get("message", ""), f.get("where") or ""]
            for f in findings]
    summary = ", ".join(f"{n} {k}" for k, n in (report.get("summary") or {}).items())
    return (f"<p>{'ok' if report.get('ok') else 'not ok'} ({html.escape(summary)})</p>"
            + _table(rows, ["status", "check", "message", "where"], [str(f.get("status", "")) for f in findings]))


def _images(folder: Path, kind: str) -> str:
    if kind != "gan":
        return ""
    parts = []
    latest = folder / "grid-latest.png"
    if latest.is_file():
        parts.append(f'<h2>Latest grid</h2><img class="latest" alt="latest grid" src="{_png(latest)}">')
    grids = sorted((folder / "grids").glob("grid-*.png"))
    if len(grids) > 1:
        step = max(1, -(-len(grids) // GRIDS_SHOWN))
        chosen = grids[::step][: GRIDS_SHOWN - 1] + ([grids[-1]] if grids[::step][-1] != grids[-1] else [])
        cells = "".join(f'<figure style="display:inline-block"><img alt="{p.stem}" src="{_png(p)}">'
                        f"<figcaption>{html.escape(p.stem.removeprefix('grid-'))}</figcaption></figure>"
                        for p in chosen)
        parts.append(f'<h2>Grids over time ({len(grids)} saved, {len(chosen)} shown)</h2><div class="grids">{cells}</div>')
    plots = sorted((folder / "label_control").glob("label-control-*.png"))
    if plots:
        parts.append(f'<h2>Label control ({plots[-1].stem})</h2><img class="latest" alt="label control" '
                     f'src="{_png(plots[-1])}">')
    return "".join(parts)


def _answers(folder: Path, kind: str) -> str:
    if kind != "llm":
        return ""
    files = sorted((folder / "samples").glob("epoch-*.jsonl"))
    if not files:
        return ""
    rows = [r for r in read_stats(files[-1]) if "answer" in r]
    right = sum(r.get("answer") == r.get("expected") for r in rows)
    return (f"<h2>Sample answers ({files[-1].stem}: {right} of {len(rows)} exact)</h2>"
            + _table([[r.get("input", ""), r.get("expected", ""), r.get("answer", "")] for r in rows],
                     ["input", "expected", "answer"]))


def _recipe(folder: Path) -> str:
    parts = []
    for path in [folder / RECIPE, *sorted(folder.glob("recipe-resume-*.yaml"))]:
        try:
            parts.append(f"<h3>{path.name}</h3><pre>{html.escape(path.read_text(encoding='utf-8'))}</pre>")
        except OSError:
            continue
    return "".join(parts) or "<p>No recipe.yaml.</p>"


def _status(stats: list[dict], kind: str) -> str:
    done = next((r for r in reversed(stats) if r.get("done") or "train_runtime" in r), None)
    last = next((r for r in reversed(stats) if not r.get("done")), None)
    if done is not None:
        kimg = done.get("kimg")
        where = f"{kimg:g} kimg, step {done.get('step')}" if isinstance(kimg, (int, float)) else f"step {done.get('step')}"
        return f"finished ({where})"
    if last is None:
        return "no stats yet"
    at = f"{last['kimg']:g} kimg, " if isinstance(last.get("kimg"), (int, float)) else ""
    return f"in progress or stopped (last line: {at}step {last.get('step')})"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n{MARK}\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            f"<p><small>ohlora report, {time.strftime('%Y-%m-%d %H:%M:%S')}</small></p></body></html>\n")


# ----------------------------------------------------------------------------------- the pages


def render_run(folder: Path) -> str:
    folder = Path(folder)
    _keep_matplotlib_in(folder)
    stats = read_stats(folder / STATS)
    kind = run_kind(folder, stats)
    info = _read_json(folder / RUN_INFO)
    body = [f"<p>{html.escape(str(folder.resolve()))}: {kind.upper()} run, {html.escape(_status(stats, kind))}</p>"]
    if isinstance(info, dict):
        body.append("<h2>Plan (run.json)</h2>" + _table([[k, v] for k, v in info.items()]))
    body.append("<h2>Curves (stats.jsonl)</h2>" + _charts(series(stats, kind), "kimg" if kind == "gan" else "step"))
    body.append(_images(folder, kind))
    body.append(_answers(folder, kind))
    body.append("<h2>Preflight (doctor.json)</h2>" + _preflight(folder))
    body.append("<h2>Recipe</h2>" + _recipe(folder))
    return _page(f"ohlora run: {folder.name}", "".join(body))


def write_report(folder: Path) -> Path:
    """(Re)build ``folder/report.html``; returns its path."""
    path = Path(folder) / REPORT
    write_text(path, render_run(folder))
    return path


def render_compare(folders: list[Path]) -> str:
    """Several runs side by side: each chart with one line per run, the recipe keys that differ,
    and each run's latest grid or answers."""
    from .run import flatten

    _keep_matplotlib_in(folders[0])
    runs = []
    for folder in folders:
        stats = read_stats(folder / STATS)
        kind = run_kind(folder, stats)
        runs.append((folder, kind, series(stats, kind)))
    merged: dict[str, dict[str, list]] = {}
    for folder, _, charts in runs:
        for title, lines in charts.items():
            for name, points in lines.items():
                label = f"{folder.name}: {name}" if len(lines) > 1 else folder.name
                merged.setdefault(title, {})[label] = points
    kinds = {kind for _, kind, _ in runs}
    xlabel = "kimg" if kinds == {"gan"} else "step" if kinds == {"llm"} else "kimg (GAN) / step (LLM)"
    recipes = []
    for folder in folders:
        latest = RunFolder(folder).latest_recipe()
        try:
            import yaml

            recipes.append(flatten(yaml.safe_load(latest.read_text(encoding="utf-8")) or {}))
        except (OSError, ValueError, AttributeError):
            recipes.append({})
    keys = sorted({k for r in recipes for k in r})
    differ = [[k, *[r.get(k, "(absent)") for r in recipes]] for k in keys if len({repr(r.get(k)) for r in recipes}) > 1]
    body = [f"<p>{len(folders)} runs: " + ", ".join(html.escape(str(f.resolve())) for f in folders) + "</p>",
            "<h2>Curves</h2>" + _charts(merged, xlabel),
            "<h2>Recipe keys that differ</h2>" + (_table(differ, ["key", *[f.name for f in folders]]) if differ
                                                 else "<p>The recipes are the same.</p>")]
    cols = "".join(f"<div><h2>{html.escape(folder.name)}</h2><p>{html.escape(_status(read_stats(folder / STATS), kind))}</p>"
                   f"{_images(folder, kind)}{_answers(folder, kind)}</div>" for folder, kind, _ in runs)
    body.append(f'<div class="cols">{cols}</div>')
    return _page("ohlora runs compared: " + ", ".join(f.name for f in folders), "".join(body))


class ReportWriter:
    """A run's report.html, rebuilt during training at most every ``min_gap_s`` seconds and never
    more often than ten times its own build time (so it costs a run at most a tenth of its time on a
    busy machine), and always at the end."""

    def __init__(self, folder: Path, *, min_gap_s: float = 30.0, cost_factor: float = 10.0):
        self.folder, self.min_gap_s, self.cost_factor = Path(folder), min_gap_s, cost_factor
        self.built_at, self.cost = 0.0, 0.0

    def maybe(self) -> None:
        """During training: a report that cannot be drawn is said once and never stops the run."""
        now = time.monotonic()
        if self.cost < 0 or now - self.built_at < max(self.min_gap_s, self.cost_factor * self.cost):
            return
        try:
            self.write()
        except Exception as exc:  # a page is not worth a training run
            from ..console import warn

            warn(f"could not build {self.folder / REPORT} ({type(exc).__name__}: {exc}); training goes on, "
                 f"rebuild it later with: ohlora report {self.folder}")
            self.cost = -1.0  # not again in this run

    def write(self) -> Path:
        start = time.monotonic()
        path = write_report(self.folder)
        self.built_at = time.monotonic()
        self.cost = self.built_at - start
        return path
