"""``ohlora report``: a run folder's page rebuilt, several runs compared, and what it refuses; the page
seen by a real browser (headless Chromium) is not blank.

Run folders are written here as a run writes them (marker, recipe, stats.jsonl, grids), with stats
lines that carry what the GAN's label control logs, so the label-control chart is exercised too.
"""

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image
from report_html import parse_report
from typer.testing import CliRunner

from ohlora_cli.cli import app


def gan_run(folder, *, batch=8, lines=40, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    (folder / ".ohlora.json").write_text(json.dumps({"made_by": "run", "ohlora": "test"}))
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"kind": "gan", "train": {"batch_size": batch, "kimg": 4}}))
    (folder / "run.json").write_text(json.dumps({"kind": "gan", "global_batch": batch}))
    (folder / "doctor.json").write_text(json.dumps({"ok": True, "summary": {"pass": 1}, "findings": [
        {"check": "dtype-mismatch", "status": "pass", "message": "labels are float32", "where": None}]}))
    with open(folder / "stats.jsonl", "w") as fh:
        for i in range(1, lines + 1):
            fh.write(json.dumps({"kimg": i / 10, "step": i, "d_loss": 1 + math.sin(i / 5), "g_loss": 1 - math.sin(i / 5) / 2,
                                 "r1": 0.01 * i, "img_per_s": 150 + i, "label_control/brightness/r": i / lines,
                                 "label_control/position/r": i / lines / 2}) + "\n")
        fh.write(json.dumps({"done": True, "kimg": lines / 10, "step": lines}) + "\n")
    (folder / "grids").mkdir()
    for k in (1, 2, 3):
        Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(folder / "grids" / f"grid-{k:09.3f}kimg.png")
    shutil.copy(folder / "grids" / "grid-00003.000kimg.png", folder / "grid-latest.png")
    return folder


def report(*args):
    result = CliRunner().invoke(app, ["report", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())


def test_a_run_page_has_its_curves_grids_preflight_and_recipe(tmp_path):
    run = gan_run(tmp_path / "a")
    code, shown = report(run)
    assert code == 0 and f"report: {run / 'report.html'}" in shown
    page = parse_report(run / "report.html")
    assert {"losses (D / G)", "label control r per label", "images per second"} <= set(page.charts)
    assert "latest grid" in page.images and page.images["latest grid"].size == (32, 16)
    assert "Grids over time (3 saved, 3 shown)" in page.text and "finished (4 kimg, step 40)" in page.text
    assert "dtype-mismatch" in page.text and "batch_size: 8" in page.text


def test_runs_compared_side_by_side_with_the_recipe_keys_that_differ(tmp_path):
    a, b = gan_run(tmp_path / "a"), gan_run(tmp_path / "b", batch=16, seed=1)
    code, shown = report(a, b)
    assert code == 2 and "-o" in shown  # where to write it is the user's choice
    code, shown = report(a, b, "-o", tmp_path / "cmp.html")
    assert code == 0, shown
    page = parse_report(tmp_path / "cmp.html")
    assert "losses (D / G)" in page.charts and "train.batch_size 8 16" in page.text
    assert "train.kimg" not in page.text and "kind" not in page.text  # keys that are the same are not listed
    code, shown = report(a, b, "-o", tmp_path / "cmp.html")  # our own page: rewritten
    assert code == 0, shown


def test_refuses_what_is_not_a_run_and_never_writes_over_a_users_file(tmp_path):
    run = gan_run(tmp_path / "a")
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    code, shown = report(run, "-o", mine)
    assert code == 2 and "not made by ohlora report" in shown and mine.read_text() == "<p>my notes</p>"
    (tmp_path / "plain").mkdir()
    code, shown = report(tmp_path / "plain")
    assert code == 2 and "not an ohlora run folder" in shown
    assert not (tmp_path / "plain" / "report.html").exists()


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)


@pytest.mark.skipif(chromium() is None, reason="no Chromium or Chrome on PATH (apt-get install chromium)")
def test_a_real_browser_draws_the_page(tmp_path):
    run = gan_run(tmp_path / "a")
    assert report(run)[0] == 0
    shot = tmp_path / "shot.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1600", f"--screenshot={shot}", (run / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[1] >= 1000
    # not blank: text and charts put many dark pixels on the white page, with real contrast
    assert (pixels < 128).mean() > 0.005 and pixels.std() > 10


def test_during_training_the_page_is_rebuilt_when_due_and_a_failure_never_stops_the_run(tmp_path, capsys):
    from ohlora_cli.runtime.report import ReportWriter

    run = gan_run(tmp_path / "a", lines=3)
    page = run / "report.html"
    every = ReportWriter(run, min_gap_s=0, cost_factor=0)  # always due
    every.maybe()
    first = parse_report(page).charts["losses (D / G)"].tobytes()
    with open(run / "stats.jsonl", "a") as fh:
        fh.write(json.dumps({"kimg": 5.0, "step": 50, "d_loss": 3.0, "g_loss": 0.5}) + "\n")
    every.maybe()  # due again: the new line is drawn
    assert parse_report(page).charts["losses (D / G)"].tobytes() != first

    seldom = ReportWriter(run, min_gap_s=1e9)
    seldom.maybe()  # the first is always due
    built = page.stat().st_mtime_ns
    seldom.maybe()
    assert page.stat().st_mtime_ns == built  # not due: not rebuilt

    broken = gan_run(tmp_path / "b", lines=3)
    (broken / "report.html").mkdir()  # the page cannot be written
    writer = ReportWriter(broken, min_gap_s=0, cost_factor=0)
    writer.maybe()
    writer.maybe()
    said = capsys.readouterr().err
    assert said.count("could not build") == 1 and f"ohlora report {broken}" in " ".join(said.split())
