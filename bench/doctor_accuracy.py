"""How right the doctor's script analysis is: on its own fixtures, on real public code, and a crash sweep.

Usage:
  python bench/doctor_accuracy.py                       # the fixture corpus (tests/fixtures/doctor)
  python bench/doctor_accuracy.py --real bench/realcode/ohlora.json bench/realcode/public.json
  python bench/doctor_accuracy.py --sweep huggingface/diffusers pytorch/examples
  python bench/doctor_accuracy.py --real bench/realcode/ohlora.json --run [--only 0 2]

1. Fixtures: every run of every case, scored per check: expected findings found with the right
   status (recall), found only as a WARN where a FAIL was expected, missed, and false findings
   (FAIL / WARN that no expected.json asks for).
2. Real code (``--real MANIFEST ...``): each manifest entry names a public repository, a commit,
   the entry script and what a careful reader found there (``expected``: check and the lines; an
   empty list for a clean script). The repository must have been brought to this machine with the
   search tool's ``fetch`` (a git dir under --mirrors); the entry's folder is extracted at that
   commit into a temporary folder (nothing is copied into this project), optional ``edits``
   rebuild a state the author described but never committed, and the analysis runs on it.
   ``remaining`` (optional, same shape as ``expected``) lists real failures a state still has that
   are not the one it stands for (a fix that never touched them): found, they are reported as
   "remaining", neither as the entry's bug nor as a false finding, and a fix state stays clean.
   With ``--run``, each entry with a ``"run"`` key (``{"maker", "steps", "timeout", "gpus", "args"}``)
   is prepared by its maker (bench/realcode/run_makers: synthetic data in the schema the script
   reads, tiny models) and run under ``ohlora doctor SCRIPT --run --json``: found by the static
   analysis, by the run (observed findings only), by both; fix states without a FAIL; crashes.
   ``"run": {"skip": "why"}`` lists the entry as skipped with its reason (docs/doctor-realcode-run.md).
   An entry whose truth changed with the libraries (a fix that held at its commit's time and no
   longer does) has ``"today": {"expected": [...], "why": ...}``: the same findings are judged
   against both truths, and a second row prints today's (the totals keep the commit's truth).
3. Sweep (``--sweep OWNER/NAME ...``): every ``.py`` file of the repository's newest commit used as
   an entry point: crashes and files slower than 2 s are counted.

Prints a table and one JSON line (``--details FILE`` writes every finding).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ohlora_cli.doctor import static  # noqa: E402
from ohlora_cli.doctor.registry import Context  # noqa: E402

FIXTURES = HERE.parent / "tests" / "fixtures" / "doctor"
CHECK_IDS = [c.id for c in static.CHECKS]


def analyse(script: Path, gpus: int | None) -> list:
    ctx = Context("script", gpus=gpus, script=script)
    return [f for check in static.CHECKS for f in check.run(ctx)]


def _matches(finding, expected: dict) -> bool:
    return finding.check == expected["check"] and finding.where in expected["at"]


def _remaining(entry: dict, finding) -> bool:
    """Is ``finding`` one of the entry's ``remaining`` failures (true, though not what the entry is about)?"""
    return any(_matches(finding, r) for r in entry.get("remaining", []))


# -- fixtures ----------------------------------------------------------------------------------

def fixture_scores() -> dict:
    per = {check: Counter() for check in CHECK_IDS}
    runs = 0
    for case in sorted(p for p in FIXTURES.iterdir() if (p / "expected.json").is_file()):
        spec = json.loads((case / "expected.json").read_text())
        for run in spec["runs"]:
            runs += 1
            cwd = os.getcwd()
            os.chdir(case)
            try:
                findings = analyse(Path(spec.get("script", "train.py")), run.get("gpus"))
            finally:
                os.chdir(cwd)
            left = list(findings)
            for expected in run.get("found", []):
                status = expected.get("status", "fail")
                counts = per[expected["check"]]
                counts["expected"] += 1
                hit = next((f for f in left if f.check == expected["check"] and f.where in expected["at"]), None)
                if hit is None:
                    counts["missed"] += 1
                    continue
                left.remove(hit)
                counts["found" if hit.status.value == status else f"found as {hit.status.value}"] += 1
            for finding in left:
                per[finding.check][f"false {finding.status.value}"] += 1
    return {"runs": runs, "per_check": {k: dict(v) for k, v in per.items()}}


def print_fixtures(scores: dict) -> None:
    print(f"Fixture corpus: {len(list(FIXTURES.iterdir()))} cases, {scores['runs']} runs")
    print("| check | expected | found | found as other status | missed | false FAIL | false WARN | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for check, c in scores["per_check"].items():
        other = sum(v for k, v in c.items() if k.startswith("found as"))
        recall = c.get("found", 0) / c["expected"] if c.get("expected") else float("nan")
        print(f"| {check} | {c.get('expected', 0)} | {c.get('found', 0)} | {other} | {c.get('missed', 0)} | "
              f"{c.get('false fail', 0)} | {c.get('false warn', 0)} | {recall:.2f} |")


# -- real code ---------------------------------------------------------------------------------

def git_dir(mirrors: Path, repo: str) -> Path:
    base = mirrors / repo.replace("/", "+")
    for candidate in (base / "repo" / ".git", base / "repo"):
        if candidate.exists():
            return candidate
    return base


def extract(gitdir: Path, commit: str, paths: list[str], dest: Path) -> None:
    """The Python files under ``paths`` at ``commit`` (data and weights are not needed, and large
    files are absent from fetched snapshots)."""
    spec = " ".join(f"':(glob){p.rstrip('/') + '/' if p else ''}**/*.py'" for p in paths)
    subprocess.run(f"git --git-dir='{gitdir}' archive {commit} -- {spec} | tar -x -C '{dest}'", shell=True,
                   check=True, capture_output=True)


def apply_edits(root: Path, edits: list[dict]) -> None:
    """Rebuild a documented but uncommitted state: delete, replace or insert one line."""
    for edit in edits:
        path = root / edit["file"]
        lines = path.read_text(encoding="utf-8").split("\n")
        i = edit["line"] - 1
        if edit["op"] == "delete":
            del lines[i]
        elif edit["op"] == "replace":
            assert edit["old"] in lines[i], (edit, lines[i])
            lines[i] = lines[i].replace(edit["old"], edit["new"])
        elif edit["op"] == "insert_after":
            lines.insert(i + 1, edit["text"])
        path.write_text("\n".join(lines), encoding="utf-8")


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def timed_analysis(script: Path, gpus: int | None, limit: int = 30):
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    start = time.perf_counter()
    try:
        return analyse(script, gpus), None, time.perf_counter() - start
    except Timeout:
        return [], f"no answer within {limit} s", time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - a crash is what is being counted
        return [], f"{type(exc).__name__}: {exc}", time.perf_counter() - start
    finally:
        signal.alarm(0)


def verdict(entry: dict, findings: list, error: str | None) -> tuple[str, list, list]:
    """(verdict, findings nobody expected, WARNs on lines the manifest calls acceptable).

    ``expected``: real failures, to be found as FAIL. ``acceptable``: patterns where a WARN is
    defensible though nothing fails (a graph built and dropped by a sampler); a FAIL there is false.
    ``remaining``: real failures a state still has that are not the failure it is listed for (a fix
    that never touched them); a finding there is true whatever its status, and the verdict says so."""
    if error:
        return "crash", [], []
    kept = [f for f in findings if f.status.value in ("fail", "warn") and _remaining(entry, f)]
    left = [f for f in findings if f not in kept]
    caught = warned = overstated = 0
    for expected in entry["expected"]:
        want = expected.get("status", "fail")  # "warn" where the truth depends on the machine (GPU count)
        hit = next((f for f in left if _matches(f, expected) and f.status.value == want), None) or \
            next((f for f in left if _matches(f, expected)), None)
        if hit is not None:
            left.remove(hit)
            got = hit.status.value
            caught += got == want
            warned += want == "fail" and got == "warn"
            overstated += want == "warn" and got == "fail"
    # the same bug on another line the reader listed for it (five running totals, each its own line)
    left = [f for f in left if not any(_matches(f, e) and f.status.value == e.get("status", "fail")
                                       for e in entry["expected"])]
    justified = [f for f in left if f.status.value == "warn"
                 and any(_matches(f, a) for a in entry.get("acceptable", []))]
    extra = [f for f in left if f.status.value in ("fail", "warn") and f not in justified]
    if entry["expected"]:
        n = len(entry["expected"])
        text = "caught" if caught == n else "caught as WARN" if caught + warned == n else \
            "overstated as FAIL" if caught + warned + overstated == n else "missed"
    else:
        text = "clean"
    if kept:
        text += " + remaining " + ("FAIL" if any(f.status.value == "fail" for f in kept) else "WARN")
    if justified:
        text += " + acceptable WARN"
    if any(f.status.value == "fail" for f in extra) or overstated:
        text += " + false FAIL"
    elif extra:
        text += " + other WARN"
    return text, extra, justified


def prepare(gitdir: Path, entry: dict, work: Path) -> Path:
    """The entry's folder at its commit (plus ``extra`` folders), edits applied: its root."""
    extract(gitdir, entry["commit"], [entry["root"], *entry.get("extra", [])], work)
    root = work / entry["root"]
    apply_edits(root, entry.get("edits", []))
    return root


def static_analysis(entry: dict, work: Path, root: Path):
    """The static analysis as the CLI runs it from the entry folder: (findings, error, seconds)."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return timed_analysis(Path(os.path.relpath(work / entry["path"], root)), entry.get("gpus"))
    finally:
        os.chdir(cwd)


def real_code(manifests: list[Path], mirrors: Path) -> dict:
    rows = []
    for manifest in manifests:
        for entry in json.loads(manifest.read_text()):
            gitdir = git_dir(mirrors, entry["repo"])
            if not gitdir.exists():
                rows.append({**_row(entry), "verdict": "not fetched", "found": [], "seconds": 0})
                continue
            work = Path(tempfile.mkdtemp(prefix="doctor-real-"))
            try:
                root = prepare(gitdir, entry, work)
                findings, error, seconds = static_analysis(entry, work, root)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            text, extra, justified = verdict(entry, findings, error)
            rows.append({**_row(entry), "verdict": text, "error": error, "seconds": round(seconds, 3),
                         "found": [f"{f.check}:{f.status.value}@{f.where}" for f in findings],
                         "extra": [f"{f.check}:{f.status.value}@{f.where}: {f.message}" for f in extra],
                         "acceptable_warns": len(justified)})
    return {"rows": rows, "totals": _totals(rows)}


def _row(entry: dict) -> dict:
    return {"repo": entry["repo"], "path": entry["path"], "commit": entry["commit"][:8],
            "expected": [f"{e['check']}@{e['at'][0]}" for e in entry["expected"]] or ["clean"],
            "label": entry.get("label", "")}


def _totals(rows: list) -> dict:
    bugs = [r for r in rows if r["expected"] != ["clean"] and r["verdict"] != "not fetched"]
    clean = [r for r in rows if r["expected"] == ["clean"] and r["verdict"] != "not fetched"]
    measured = bugs + clean
    return {
        "scripts": len(measured),
        "bugs": len(bugs),
        "bugs_caught": sum(r["verdict"].startswith("caught") and "WARN" not in r["verdict"].split("+")[0]
                           for r in bugs),
        "bugs_caught_as_warn": sum(r["verdict"].startswith("caught as WARN") for r in bugs),
        "clean": len(clean),
        "false_fail_findings": sum(x.split("@")[0].endswith(":fail") for r in measured for x in r.get("extra", [])),
        "scripts_with_false_fail": sum("false FAIL" in r["verdict"] for r in measured),
        "acceptable_warn_findings": sum(r.get("acceptable_warns", 0) for r in measured),
        "other_warn_findings": sum(x.split("@")[0].endswith(":warn") for r in measured for x in r.get("extra", [])),
        "crashes": sum(r["verdict"] == "crash" for r in measured),
        "slowest_s": max((r["seconds"] for r in measured), default=0),
        "not_fetched": sum(r["verdict"] == "not fetched" for r in rows),
    }


def print_real(result: dict) -> None:
    print("| repository | path | commit | expected | found | verdict | s |")
    print("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        found = ", ".join(x for x in r["found"] if ":pass" not in x) or "nothing"
        print(f"| {r['repo']} | {r['path']} | {r['commit']} | {'; '.join(r['expected'])} | {found} | "
              f"{r['verdict']} | {r['seconds']} |")
    t = result["totals"]
    print(f"\n{t['scripts']} scripts: {t['bugs_caught']}/{t['bugs']} failures found with the expected status "
          f"(FAIL; WARN where it depends on the GPU count), {t['bugs_caught_as_warn']} more only as WARN, {t['scripts_with_false_fail']} of {t['scripts']} with a false "
          f"FAIL ({t['false_fail_findings']} findings), {t['acceptable_warn_findings']} WARN findings on lines the "
          f"manifest calls acceptable, {t['other_warn_findings']} other WARN findings, "
          f"{t['crashes']} crashes, slowest {t['slowest_s']:.2f} s")


# -- real code, observed (--run) ---------------------------------------------------------------

class RunFinding:
    """A finding of ``ohlora doctor --run --json`` with ``where`` made relative to the entry folder,
    shaped for ``verdict`` (``check``, ``status.value``, ``where``, ``message``)."""

    class _Status:
        def __init__(self, value: str):
            self.value = value

    def __init__(self, data: dict, cwd: Path, root: Path):
        self.check, self.message = data["check"], data.get("message", "")
        self.status = self._Status(data["status"])
        self.where = data.get("where")
        if self.where and ":" in self.where:
            path, _, line = self.where.rpartition(":")
            full = Path(path) if os.path.isabs(path) else cwd / path
            try:
                self.where = f"{os.path.relpath(os.path.realpath(full), os.path.realpath(root))}:{line}"
            except ValueError:
                pass

    @property
    def observed(self) -> bool:
        return self.message.startswith("observed") or self.check.startswith("observed-")


def observed_run(entry: dict, work: Path, root: Path) -> dict:
    """Prepare the entry with its maker, run ``ohlora doctor SCRIPT --run --json`` on it in a
    subprocess (the maker's cwd and env), and parse the report."""
    sys.path.insert(0, str(HERE / "realcode"))
    try:
        from run_makers import MAKERS
    finally:
        sys.path.pop(0)
    spec = entry["run"]
    made = MAKERS[spec["maker"]](root, entry) or {}
    cwd = Path(made.get("cwd") or root)
    env = {**os.environ, **{k: str(v) for k, v in made.get("env", {}).items()}}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "ohlora_cli", "doctor", str(work / entry["path"]), "--run", "--json",
               "--steps", str(spec.get("steps", 3)), "--timeout", str(spec.get("timeout", 300))]
    if spec.get("gpus"):
        command += ["--gpus", str(spec["gpus"])]
    command += ["--", *[str(a) for a in [*spec.get("args", []), *made.get("args", [])]]]
    # the parent waits for the run and, with --gpus N, for the second run with 1 GPU
    limit = spec.get("timeout", 300) * (2 if spec.get("gpus") else 1) + 300
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"no report within {limit} s", "findings": [], "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"no JSON report (exit {done.returncode}): {' | '.join(tail)}", "findings": [],
                "seconds": seconds}
    findings = [RunFinding(f, cwd, root) for f in report.get("findings", [])]
    return {"error": None, "findings": findings, "run": report.get("run", {}), "seconds": seconds}


def _fix_state(entry: dict) -> bool:
    return not entry["expected"] and entry.get("label", "").startswith("fixed")


def fix_clean(entry: dict, observed: list, error: str | None) -> bool | None:
    """For a fix state: did its run end without an error and without a FAIL, but for the failures the
    manifest says the fix left alone (``remaining``)? None for any other state."""
    if not _fix_state(entry):
        return None
    return error is None and not any(f.status.value == "fail" and not _remaining(entry, f) for f in observed)


def real_run(manifests: list[Path], mirrors: Path, only: set[int] | None = None) -> dict:
    """Every entry with a ``run`` key: the static verdict and the observed run's verdict."""
    rows = []
    for manifest in manifests:
        for index, entry in enumerate(json.loads(manifest.read_text())):
            if only is not None and index not in only:
                continue
            row = {**_row(entry), "manifest": manifest.name, "index": index}
            spec = entry.get("run")
            if spec is None or "skip" in spec:
                rows.append({**row, "skipped": (spec or {}).get("skip", "no run key")})
                continue
            gitdir = git_dir(mirrors, entry["repo"])
            if not gitdir.exists():
                rows.append({**row, "skipped": "not fetched"})
                continue
            work = Path(tempfile.mkdtemp(prefix="doctor-realrun-"))
            try:
                root = prepare(gitdir, entry, work)
                findings, error, _ = static_analysis(entry, work, root)
                static_text, _, _ = verdict(entry, findings, error)
                got = observed_run(entry, work, root)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            observed = [f for f in got["findings"] if f.observed]
            # the observed verdict: only what the run saw (a crash that is the dtype failure is attached to it)
            crash = next((f for f in observed if f.check == "observed-run" and f.status.value == "fail"), None)
            judged = [f for f in observed if not f.check.startswith("observed-")]
            run_text = _run_verdict(entry, judged, got, crash)
            if "today" in entry:  # the truth under today's libraries, where it differs from the commit's time
                today = {**entry, "expected": entry["today"]["expected"]}
                row["today"] = {"expected": _row(today)["expected"], "static": verdict(today, findings, error)[0],
                                "run": _run_verdict(today, judged, got, crash)}
            rows.append({**row, "static": static_text, "run": run_text,
                         "both": static_text.startswith("caught") and run_text.startswith("caught"),
                         "fix_clean": fix_clean(entry, observed, got["error"]),
                         "crash": (f"{crash.where}: {crash.message[:300]}" if crash else got["error"]),
                         "steps": got.get("run", {}).get("steps"), "seconds": round(got["seconds"], 1),
                         "observed": [f"{f.check}:{f.status.value}@{f.where}" for f in observed
                                      if f.status.value != "pass"],
                         "messages": [f"{f.check}@{f.where}: {f.message}" for f in observed
                                      if f.status.value in ("fail", "warn")]})
    return {"rows": rows, "totals": _run_totals(rows)}


def _run_verdict(entry: dict, judged: list, got: dict, crash) -> str:
    text, _, _ = verdict(entry, judged, got["error"])
    if crash is not None and got["error"] is None:
        text += " + crash"
    elif got["error"] is None and got.get("run", {}).get("timed_out"):
        text += " + time limit"
    return text


def _run_totals(rows: list) -> dict:
    ran = [r for r in rows if "skipped" not in r]
    bugs = [r for r in ran if r["expected"] != ["clean"]]
    fixes = [r for r in ran if r["fix_clean"] is not None]
    return {
        "entries": len(rows), "ran": len(ran), "skipped": len(rows) - len(ran), "bugs": len(bugs),
        "found_static": sum(r["static"].startswith("caught") for r in bugs),
        "found_run": sum(r["run"].startswith("caught") for r in bugs),
        "found_both": sum(r["both"] for r in bugs),
        "fixes": len(fixes), "fixes_clean": sum(bool(r["fix_clean"]) for r in fixes),
        "crashes": sum(r["crash"] is not None for r in ran),
        "slowest_s": max((r["seconds"] for r in ran), default=0),
    }


def print_run(result: dict) -> None:
    print("| # | path | commit | label | expected | static | --run | both | fix clean | steps | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        head = f"| {r['index']} | {r['path']} | {r['commit']} | {r['label']} | {'; '.join(r['expected'])} |"
        if "skipped" in r:
            print(f"{head} skipped: {r['skipped']} | | | | | |")
            continue
        fix = "" if r["fix_clean"] is None else "yes" if r["fix_clean"] else "no"
        print(f"{head} {r['static']} | {r['run']} | {'yes' if r['both'] else ''} | {fix} | {r['steps']} | "
              f"{r['seconds']} |")
        if "today" in r:  # the same run judged against the truth under today's libraries
            t = r["today"]
            both = t["static"].startswith("caught") and t["run"].startswith("caught")
            print(f"| {r['index']} | (same run) | | {r['label']}, today's libraries | {'; '.join(t['expected'])} | "
                  f"{t['static']} | {t['run']} | {'yes' if both else ''} | | | |")
    for r in result["rows"]:
        for line in r.get("messages", []) + ([f"crash: {r['crash']}"] if r.get("crash") else []):
            print(f"    [{r['index']}] {line[:600]}")
    t = result["totals"]
    print(f"\n{t['ran']} of {t['entries']} entries run ({t['skipped']} skipped): of {t['bugs']} failures "
          f"{t['found_static']} found by the static analysis, {t['found_run']} by --run, {t['found_both']} by both; "
          f"{t['fixes_clean']}/{t['fixes']} fix states clean; {t['crashes']} crashes; slowest {t['slowest_s']:.0f} s")


# -- sweep -------------------------------------------------------------------------------------

def sweep(repos: list[str], mirrors: Path) -> dict:
    results = {}
    for repo in repos:
        gitdir = git_dir(mirrors, repo)
        commit = subprocess.run(["git", f"--git-dir={gitdir}", "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        work = Path(tempfile.mkdtemp(prefix="doctor-sweep-"))
        try:
            subprocess.run(f"git --git-dir='{gitdir}' archive {commit} -- ':(glob)**/*.py' | tar -x -C '{work}'",
                           shell=True, check=True, capture_output=True)
            files = sorted(work.rglob("*.py"))
            crashes, slow, times, timed, unparsable = [], [], [], [], []
            for path in files:
                cwd = os.getcwd()
                os.chdir(path.parent)
                try:
                    _, error, seconds = timed_analysis(Path(path.name), None)
                finally:
                    os.chdir(cwd)
                rel = str(path.relative_to(work))
                times.append(seconds)
                timed.append((round(seconds, 3), rel))
                if error and error.startswith("BadInputError"):
                    unparsable.append(rel)  # exit 2 with a message naming the file, as the CLI does
                elif error:
                    crashes.append(f"{rel}: {error}")
                if seconds > 2:
                    slow.append(f"{rel}: {seconds:.1f} s")
            results[repo] = {"commit": commit[:8], "files": len(files), "crashes": crashes, "slow": slow,
                             "unparsable": len(unparsable),
                             "max_s": round(max(times, default=0), 3), "slowest": sorted(timed)[-5:][::-1],
                             "mean_s": round(sum(times) / len(times), 4) if times else 0}
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


def print_sweep(results: dict) -> None:
    print("| repository | commit | .py files | not Python 3 (exit 2) | crashes | over 2 s | slowest s | mean s |")
    print("|---|---|---|---|---|---|---|---|")
    for repo, r in results.items():
        print(f"| {repo} | {r['commit']} | {r['files']} | {r['unparsable']} | {len(r['crashes'])} | {len(r['slow'])} | "
              f"{r['max_s']} | {r['mean_s']} |")
        for line in r["crashes"][:20] + r["slow"][:20]:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", nargs="+", type=Path, help="real-code manifests (JSON)")
    parser.add_argument("--sweep", nargs="+", help="OWNER/NAME repositories to sweep")
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"), help="where fetch put the git dirs")
    parser.add_argument("--details", type=Path, help="write every row and finding to this JSON file")
    parser.add_argument("--run", action="store_true",
                        help="with --real: run each entry that has a \"run\" key under `ohlora doctor --run`")
    parser.add_argument("--only", type=int, nargs="+", help="with --run: only these entry indices")
    args = parser.parse_args()
    out: dict = {}
    if args.real and args.run:
        out["real_run"] = real_run(args.real, args.mirrors, set(args.only) if args.only else None)
        print_run(out["real_run"])
    elif args.real:
        out["real"] = real_code(args.real, args.mirrors)
        print_real(out["real"])
    if args.sweep:
        out["sweep"] = sweep(args.sweep, args.mirrors)
        print_sweep(out["sweep"])
    if not args.real and not args.sweep:
        out["fixtures"] = fixture_scores()
        print_fixtures(out["fixtures"])
    if args.details:
        args.details.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    summary = {"fixtures": out.get("fixtures", {}).get("per_check"),
               "real": out.get("real", {}).get("totals"),
               "real_run": out.get("real_run", {}).get("totals"),
               "sweep": {k: {"files": v["files"], "crashes": len(v["crashes"]), "slow": len(v["slow"]),
                             "max_s": v["max_s"]} for k, v in out.get("sweep", {}).items()} or None}
    print(json.dumps({"bench": "doctor_accuracy", **{k: v for k, v in summary.items() if v is not None}}))


if __name__ == "__main__":
    main()
