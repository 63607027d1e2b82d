"""bench/doctor_groundtruth.py for real on three small fixtures: a float64 crash, a graph that grows
with every step, a clean script. Plain execution (python and the bench's own runner), the doctor's
--run and expected.json must say the same for each."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bounds import HANG_S

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "seed1_python_floats": ("dtype-mismatch", "fail"),
    "grad_losses_append": ("grad-inference", "fail"),
    "clean_int_class_labels": (None, "none"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    save = tmp_path_factory.mktemp("gt") / "gt.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "doctor_groundtruth.py"), "--cases", *CASES,
                           "--save", str(save)], cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert save.is_file(), proc.stderr[-2000:]
    data = json.loads(save.read_text(encoding="utf-8"))
    return data, proc.stdout


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    import doctor_groundtruth

    return doctor_groundtruth


def test_every_job_ran_and_the_fixtures_were_not_written(results):
    data, stdout = results
    assert data["meta"]["jobs_done"] == data["meta"]["jobs"] == 3 * 3
    assert set(data["cases"]) == set(CASES)
    for name in CASES:
        assert not any(p.name in ("property_scores.csv", "hair.csv", "images")
                       for p in (ROOT / "tests" / "fixtures" / "doctor" / name).iterdir())
    totals = json.loads(stdout.strip().splitlines()[-1])
    assert totals["bench"] == "doctor_groundtruth" and totals["runs"] == 3


def test_dtype_crash_plain_run_and_expected_agree(results):
    entry = results[0]["cases"]["seed1_python_floats"]
    for crash in (entry["plain"]["crash"], entry["runner"]["crash"]):
        assert crash["type"] == "RuntimeError"
        assert crash["where"] == "networks.py:15"
    run = entry["runs"][0]
    assert run["expected"]["dtype-mismatch"]["status"] == "fail"
    assert run["doctor"]["observed"]["dtype-mismatch"]["status"] == "fail"
    assert "networks.py:15" in run["doctor"]["observed"]["dtype-mismatch"]["at"]
    assert _bench().plain_verdict(entry["runner"], entry["plain"])["dtype-mismatch"] == "fail"


def test_growth_plain_and_expected_agree(results):
    entry = results[0]["cases"]["grad_losses_append"]
    runner = entry["runner"]
    assert runner["steps"] == 6 and runner["growth"], runner
    assert runner["grad_tensors"] == [1, 2, 3, 4, 5, 6]  # one more kept loss per step
    assert entry["plain"]["rc"] == 0 or entry["plain"]["timed_out"]
    run = entry["runs"][0]
    assert run["expected"]["grad-inference"]["status"] == "fail"
    assert run["static"]["grad-inference"] == {"status": "fail", "at": ["train.py:18"]}
    assert _bench().plain_verdict(runner, entry["plain"])["grad-inference"] == "fail"


def test_growth_run_agrees(results):
    """The kept losses are built by ``nn.functional.mse_loss`` (reached through torch/overrides.py):
    filed under the user's line that builds them (train.py:14), not dropped as an unknown site."""
    run = results[0]["cases"]["grad_losses_append"]["runs"][0]
    assert run["doctor"]["observed"]["grad-inference"] == {"status": "fail", "at": ["train.py:14"]}


def test_clean_script_is_clean_everywhere(results):
    entry = results[0]["cases"]["clean_int_class_labels"]
    assert entry["runner"]["crash"] is None and entry["runner"]["steps"] == 6
    assert not entry["runner"]["growth"]
    assert entry["plain"]["crash"] is None
    run = entry["runs"][0]
    verdict = _bench().plain_verdict(entry["runner"], entry["plain"])
    for check in ("dtype-mismatch", "grad-inference"):
        assert run["expected"][check]["status"] == "none"
        assert run["static"][check]["status"] == "none"
        assert run["doctor"]["observed"][check]["status"] == "none"
        assert verdict[check] == "none"
    # the run's own lists, kept for the "--run end" column: nothing static to miss or to demote here
    assert run["doctor"]["run"]["unreached"] == [] and run["doctor"]["run"]["demoted"] == []
    assert _bench().run_end(run["doctor"]) == f"{run['doctor']['run']['steps']} steps"


def test_from_prints_the_table_without_rerunning(results, tmp_path):
    data, _ = results
    saved = tmp_path / "gt.json"
    saved.write_text(json.dumps(data), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "doctor_groundtruth.py"), "--from", str(saved)],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| seed1_python_floats | None |" in proc.stdout
    assert "not observable on CPU" in proc.stdout


# -- several saved results as one table (hand-made results files; nothing is run) --------------

def _verdict(**statuses):
    checks = ("dtype-mismatch", "grad-inference", "multi-gpu-batch", "cuda-visible-devices-late")
    return {c: {"status": statuses.get(c.replace("-", "_"), ("none", []))[0],
                "at": statuses.get(c.replace("-", "_"), ("none", []))[1]} for c in checks}


def _entry(steps, observed, unreached=(), demoted=(), grows=False):
    nodes = [10 + (5 * i if grows else 0) for i in range(steps)]
    return {"script": "train.py", "data": [], "plain": {"rc": 0, "timed_out": False, "seconds": 1.0, "crash": None},
            "runner": {"steps": steps, "nodes": nodes, "grad_tensors": [1] * steps, "float64_nodes": [0] * steps,
                       "batches": [], "crash": None, "growth": grows},
            "runs": [{"gpus": None, "expected": _verdict(grad_inference=("fail", ["train.py:9"])),
                      "static": _verdict(grad_inference=("fail", ["train.py:9"])),
                      "doctor": {"rc": 1, "seconds": 3.0, "observed": observed, "combined": observed,
                                 "observed_rows": [],
                                 "run": {"steps": steps, "timed_out": False, "wall_s": 2.0,
                                         "unreached": [{"check": "grad-inference", "where": w} for w in unreached],
                                         "demoted": [{"check": "grad-inference", "where": w} for w in demoted]}}}]}


def _results(started, cases, steps=6):
    return {"meta": {"steps": steps, "timeout": 120, "plain_timeout": 60, "started": started,
                     "jobs_done": 3 * len(cases), "jobs": 3 * len(cases)}, "cases": cases}


def _table(tmp_path, *files):
    paths = []
    for i, data in enumerate(files):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps(data), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "doctor_groundtruth.py"), "--from", *map(str, paths)],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] not in ("case",):
            rows[cells[0]] = cells
    return proc.stdout, rows, json.loads(proc.stdout.strip().splitlines()[-1])


def test_from_several_files_a_later_case_replaces_an_earlier_one(tmp_path):
    clean = _verdict()
    grows = _verdict(grad_inference=("fail", ["train.py:9"]))
    full = _results("10:07", {"kept": _entry(6, clean), "rerun": _entry(6, clean)})
    rerun = _results("11:00", {"rerun": _entry(6, grows, grows=True), "added": _entry(6, clean)})
    stdout, rows, totals = _table(tmp_path, full, rerun)
    assert set(rows) == {"kept", "rerun", "added"}
    assert rows["rerun"][4] == "grad-inference FAIL train.py:9"  # --run from the rerun, not the full run
    assert "GROWTH" in rows["rerun"][6] and "GROWTH" not in rows["kept"][6]
    assert rows["kept"][4] == "clean"
    assert totals["cases"] == 3 and totals["runs"] == 3
    assert totals["agreement"]["grad-inference"]["observed_agree"] == 3  # rerun: FAIL and growth; others clean
    assert "replacing rerun" in stdout
    # the other order: the full run's clean verdict wins
    _, rows, _ = _table(tmp_path, rerun, full)
    assert rows["rerun"][4] == "clean"


def test_merge_says_which_settings_differ():
    bench = _bench()
    merged = bench.merge([("a", _results("10:07", {"x": _entry(6, _verdict())})),
                          ("b", _results("11:00", {"y": _entry(4, _verdict())}, steps=4))])
    assert merged["meta"]["steps"].startswith("mixed") and merged["meta"]["timeout"] == 120
    assert list(merged["cases"]) == ["x", "y"]
    assert (merged["meta"]["jobs_done"], merged["meta"]["jobs"]) == (6, 6)
    same = bench.merge([("a", _results("10:07", {"x": _entry(6, _verdict())})),
                        ("b", _results("11:00", {"x": _entry(6, _verdict())}))])
    assert same["meta"]["steps"] == 6 and same["meta"]["sources"][1]["overrides"] == ["x"]


def test_run_end_column_says_steps_not_reached_and_demoted(tmp_path):
    cases = {"late": _entry(6, _verdict(), unreached=["train.py:9"]),
             "seen_clean": _entry(6, _verdict(), demoted=["train.py:9"])}
    _, rows, _ = _table(tmp_path, _results("10:07", cases))
    assert rows["late"][5] == "6 steps; not reached: grad-inference train.py:9"
    assert rows["seen_clean"][5] == "6 steps; demoted: grad-inference train.py:9"


# -- data the bench writes for a case ----------------------------------------------------------

def test_seed2_plain_copy_runs_on_cpu_and_keeps_lines(tmp_path):
    bench = _bench()
    source = ROOT / "tests" / "fixtures" / "doctor" / "seed2_no_grad_fix"
    folder = tmp_path / "seed2_no_grad_fix"
    shutil.copytree(source, folder)
    target, patched = bench.plain_copy("seed2_no_grad_fix", folder)
    assert target != folder and len(patched) == 1
    before = (folder / "train.py").read_text(encoding="utf-8").splitlines()
    after = (target / "train.py").read_text(encoding="utf-8").splitlines()
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1 and '"cpu"' in after[changed[0]] and '"cuda"' in before[changed[0]]
    assert f"train.py:{changed[0] + 1}" in patched[0]
    assert '"cuda"' in (source / "train.py").read_text(encoding="utf-8")  # the fixture itself is untouched
    assert bench.plain_copy("grad_losses_append", folder) == (folder, [])


def test_star_import_sampling_gets_its_samples_folder(tmp_path):
    folder = tmp_path / "star_import_sampling"
    shutil.copytree(ROOT / "tests" / "fixtures" / "doctor" / "star_import_sampling", folder)
    _bench().make_data("star_import_sampling", folder, tmp_path / "cache")
    assert (folder / "samples").is_dir()


def test_explain_gives_each_disagreement_its_cause_from_the_doc(tmp_path):
    clean, fail = _verdict(), _verdict(grad_inference=("fail", ["train.py:9"]))
    cases = {"missed": _entry(6, clean, grows=True), "stale": _entry(6, clean, grows=True),
             "bare": _entry(6, clean, grows=True), "agrees": _entry(6, fail, grows=True)}
    saved = tmp_path / "gt.json"
    saved.write_text(json.dumps(_results("10:07", cases)), encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text("\n".join([
        "- missed (gpus None) grad-inference: expected fail, static fail, --run none, plain fail \u2014 the census skips it",
        "- stale (gpus None) grad-inference: expected none, static none, --run none, plain fail -- w_avg grows",
        "- agrees (gpus None) grad-inference: expected fail, static fail, --run none, plain fail -- fixed since",
        "- elsewhere (gpus None) grad-inference: expected fail, static fail, --run none, plain fail -- not in these results",
    ]) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "doctor_groundtruth.py"), "--from", str(saved),
                           "--explain", str(doc)], cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {line.split(" ")[1]: line for line in proc.stdout.splitlines() if line.startswith("- ")}
    assert lines["missed"].endswith("plain fail -- the census skips it")
    assert "-- STALE (the doc explains expected none, static none, --run none, plain fail): w_avg grows" in lines["stale"]
    assert lines["bare"].endswith("-- UNEXPLAINED")
    assert "agrees (gpus None) grad-inference, which no longer disagrees" in proc.stdout
    assert "elsewhere" not in proc.stdout  # a case these results do not hold is not judged
    totals = json.loads(proc.stdout.strip().splitlines()[-1])["agreement"]["explained"]
    assert totals == {"disagreements": 3, "explained": 1, "unexplained": 1, "stale": 1, "no_longer_disagree": 1}
