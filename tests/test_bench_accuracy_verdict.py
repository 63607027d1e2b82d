"""bench/doctor_accuracy.py's verdicts on a manifest entry's ``remaining`` failures: a real failure a
fix state still has because the fix never touched it is said as such, never as a false FAIL, and the
fix's own target line stays judged."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import doctor_accuracy
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return doctor_accuracy


def finding(bench, status: str, where: str):
    return bench.RunFinding({"check": "grad-inference", "status": status, "where": where,
                             "message": "observed growth"}, ROOT, ROOT)


FIX = {"label": "fixed 2", "expected": [],
       "remaining": [{"check": "grad-inference", "at": ["gen.py:384"], "why": "the buffer chain"}]}


def test_a_remaining_failure_is_said_and_leaves_the_fix_clean(bench):
    seen = [finding(bench, "fail", "gen.py:384")]
    text, extra, _ = bench.verdict(FIX, seen, None)
    assert text == "clean + remaining FAIL" and extra == []
    assert bench.fix_clean(FIX, seen, None) is True
    # without the manifest's word, the same finding is a false FAIL and the fix is not clean
    bare = {k: v for k, v in FIX.items() if k != "remaining"}
    assert bench.verdict(bare, seen, None)[0] == "clean + false FAIL"
    assert bench.fix_clean(bare, seen, None) is False


def test_the_fix_target_line_is_still_judged(bench):
    seen = [finding(bench, "fail", "gen.py:384"), finding(bench, "fail", "gen_model.py:240")]
    text, extra, _ = bench.verdict(FIX, seen, None)
    assert text == "clean + remaining FAIL + false FAIL"
    assert [f.where for f in extra] == ["gen_model.py:240"]
    assert bench.fix_clean(FIX, seen, None) is False
    assert bench.fix_clean(FIX, [finding(bench, "warn", "gen.py:384")], "no JSON report") is False


def test_a_bug_state_with_a_remaining_failure_is_still_caught(bench):
    bug = {**FIX, "label": "seed bug 2",
           "expected": [{"check": "grad-inference", "at": ["gen_model.py:240"]}]}
    seen = [finding(bench, "fail", "gen_model.py:240"), finding(bench, "warn", "gen.py:384")]
    assert bench.verdict(bug, seen, None)[0] == "caught + remaining WARN"
    assert bench.fix_clean(bug, seen, None) is None
