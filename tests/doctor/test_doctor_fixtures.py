"""The static-analysis fixture corpus: one parametrized test over tests/fixtures/doctor/*/.

Each case folder holds a script (``train.py`` unless expected.json says otherwise), the local
modules it imports, and ``expected.json``::

    {"runs": [{"gpus": 2,
               "found": [{"check": "dtype-mismatch", "status": "fail", "at": ["train.py:12", "model.py:30"]}]}]}

``assumes`` (optional) lists assumption kinds the finding must carry (``branch``, ``model-name``, ...).
``notes`` (optional) says, in words, why the finding is there. ``missed_by: ["static"]`` marks a real
failure (shown by running the script: docs/doctor-groundtruth.md) that the static analysis does not
find: this test asserts that it still does not (so the mark stays true, and is removed the day the
analysis finds it), and does not count it among the expected findings.

Every expected finding must be matched by its own finding of that check whose ``where`` is one of
the ``at`` locations and whose chain (its evidence steps and assumptions, as data) names all of
them; every other finding of the four script checks is a failure of the test (so clean twins
assert that nothing is found).
"""

import json
from pathlib import Path

import pytest

from ohlora_cli.doctor import static
from ohlora_cli.doctor.registry import Context, Status

CASES = sorted(p for p in (Path(__file__).parent.parent / "fixtures" / "doctor").iterdir()
               if (p / "expected.json").is_file())


def _sites(finding) -> set[str]:
    """The locations a finding's chain names, as data: never read out of its message."""
    return {finding.where, *finding.sites()}


def _matches(finding, expected: dict) -> bool:
    return (finding.check == expected["check"] and finding.status.value == expected.get("status", "fail")
            and all(loc in _sites(finding) for loc in expected["at"]))


def _runs():
    for case in CASES:
        spec = json.loads((case / "expected.json").read_text())
        for i, run in enumerate(spec["runs"]):
            yield pytest.param(case, spec.get("script", "train.py"), run, id=f"{case.name}-{i}")


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert sum(len(list(c.glob("*.py"))) for c in CASES) >= 30


@pytest.mark.parametrize("case, script, run", list(_runs()))
def test_fixture(case, script, run, monkeypatch):
    monkeypatch.chdir(case)
    ctx = Context("script", gpus=run.get("gpus"), script=Path(script))
    findings = [f for check in static.CHECKS for f in check.run(ctx)]
    assert all(f.status is not Status.PASS for f in findings)

    unmatched = list(findings)
    for expected in run.get("found", []):
        match = next((f for f in unmatched if _matches(f, expected)), None)
        if "static" in expected.get("missed_by", []):
            assert expected.get("notes"), "a finding marked missed_by says why it is there"
            assert match is None, f"the static analysis now finds {expected}: remove its missed_by mark"
            continue
        assert match is not None, f"expected {expected} among {[(f.check, f.where, f.message) for f in unmatched]}"
        assert match.where in expected["at"], f"where {match.where} is not one of {expected['at']}"
        assert match.hint, "every finding carries a fix hint"
        assert match.evidence and match.where in [s.where for s in match.evidence], "where is a step of its chain"
        for kind in expected.get("assumes", []):
            assert kind in [a.kind.value for a in match.assumptions], f"{kind} not among {match.assumptions}"
        unmatched.remove(match)
    assert not unmatched, f"unexpected findings: {[(f.check, f.status.value, f.where, f.message) for f in unmatched]}"
