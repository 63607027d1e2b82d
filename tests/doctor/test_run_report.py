"""``ohlora doctor SCRIPT.py --run``: one report with the static analysis. Observed findings carry
their chain as ``evidence`` (sites and roles asserted, never wording); static warnings and failures
whose line the run never executed are listed; a static FAIL the run executed and saw clean is
demoted to a WARN. Real tiny torch scripts, run through the CLI in a child process."""

import sys

import pytest
from bounds import HANG_S
from observing import doctor_json, line, observe
from scripts import write
from typer.testing import CliRunner

from ohlora_cli.cli import app

runner = CliRunner()


def observed(data, check):
    return [f for f in data["findings"] if f["check"] == check and f["message"].startswith("observed")]


def chain(finding):
    return [(step["where"], step["role"]) for step in finding["evidence"]]


# --- evidence on observed findings, and the static sites the run never reached -----------------------

REPORT = """
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class Pairs(Dataset):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.x = rng.standard_normal((64, 4)).astype(np.float32)
            self.y = rng.standard_normal((64, 1))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):  # GETITEM
            return self.x[i], self.y[i]

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    fixed = torch.randn(4, 4)
    samples = []
    loader = DataLoader(Pairs(), batch_size=8)
    for epoch in range(10):
        for step, (x, y) in enumerate(loader):  # LOOP
            loss = (model(x) - y).pow(2).mean()  # PROMOTES
            opt.zero_grad()
            loss.backward()
            opt.step()
            samples.append(model(fixed))  # SAMPLE
            if step == 10_000:
                late = [model(fixed) for _ in range(3)]  # NEVER
                samples.extend(late)  # NEVER
"""


def test_observed_findings_carry_their_chain_and_unreached_static_sites_are_listed(project):
    script = write(project, "train.py", REPORT)
    result, data = observe("train.py")
    [dtype] = [f for f in observed(data, "dtype-mismatch") if f["status"] == "warn"]
    steps = chain(dtype)
    assert [role for _, role in steps] == ["born", "passes", "passes", "meets"], result.output
    assert steps[0][0] == line(script, "# LOOP")  # the tensor is made by the collate, for this line
    assert "collate" in steps[1][0]
    assert steps[2][0] == line(script, "# GETITEM")
    assert steps[3][0] == line(script, "# PROMOTES")

    [grad] = [f for f in observed(data, "grad-inference") if f["status"] == "fail"]
    assert grad["where"] == line(script, "# SAMPLE")
    assert [role for _, role in chain(grad)] == ["born", "kept-by", "observed"], result.output
    assert chain(grad)[1] == (line(script, "# SAMPLE"), "kept-by")  # `samples.append(...)`

    never = {f"train.py:{n}" for n, text in enumerate(script.read_text().splitlines(), 1) if "# NEVER" in text}
    unreached = data["run"]["unreached"]
    assert unreached and {u["where"] for u in unreached} <= never, result.output
    assert {u["check"] for u in unreached} == {"grad-inference"}
    static = [f for f in data["findings"] if f["where"] in never and f["status"] in ("warn", "fail")]
    assert {f["where"] for f in static} == {u["where"] for u in unreached}


CUDA_AND_BATCH = """
    import os
    import torch
    from torch import nn

    use_cuda = torch.cuda.is_available()  # QUERY
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"  # LATE
    n_gpu = torch.cuda.device_count()  # COUNT
    batch_size = 8 * max(1, n_gpu)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(10):
        loss = model(torch.randn(batch_size, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def test_cuda_order_and_batch_multiplication_carry_their_chain(project):
    script = write(project, "train.py", CUDA_AND_BATCH)
    result, data = observe("train.py", "--gpus", "2", "--steps", "2")
    [late] = [f for f in observed(data, "cuda-visible-devices-late") if f["status"] == "fail"]
    assert chain(late) == [(line(script, "# QUERY"), "cuda-init"), (line(script, "# LATE"), "env-set")], result.output
    [batch] = [f for f in observed(data, "multi-gpu-batch") if f["status"] == "fail"]
    assert chain(batch) == [(line(script, "# COUNT"), "config"), (line(script, "# COUNT"), "observed")]


def test_the_text_report_marks_a_static_site_the_run_never_reached(project):
    script = write(project, "train.py", """
        import torch
        from torch import nn

        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        losses = []
        for step in range(10):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 10_000:
                losses.append(loss)  # NEVER
    """)
    result = runner.invoke(app, ["doctor", "train.py", "--run", "--steps", "2", "--timeout", str(HANG_S)])
    assert "Traceback" not in result.output
    assert line(script, "# NEVER") in result.output
    assert "not reached by the run (2 steps)" in " ".join(result.output.split()), result.output


# --- demotion: a static FAIL the run executed and saw clean ---------------------------------------------

# The static analysis takes `.to(<a dtype it cannot see>)` for no cast: float64 meets float32 (a FAIL).
CAST_AT_RUNTIME = """
    import numpy as np
    import torch
    from torch import nn

    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.from_numpy(np.random.rand(16, 8)).to(next(model.parameters()).dtype)
    for step in range(10):
        loss = model(x).pow(2).mean()  # SITE
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == CRASH_AT:
            raise ValueError("bad batch")
"""

# The static analysis sees `losses.append(loss)` in the loop (a FAIL); the list keeps the last two.
BOUNDED = """
    import torch
    from torch import nn

    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for step in range(10):
        loss = model(torch.randn(16, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss)  # SITE
        if len(losses) > 2:
            del losses[0]
"""


def static_at(data, check, where):
    return [f for f in data["findings"] if f["check"] == check and f["where"] == where
            and not f["message"].startswith("observed")]


@pytest.mark.parametrize(("check", "text", "args", "demoted"), [
    ("dtype-mismatch", CAST_AT_RUNTIME.replace("CRASH_AT", "-1"), [], True),
    ("dtype-mismatch", CAST_AT_RUNTIME.replace("CRASH_AT", "3"), [], False),  # the run crashed
    ("grad-inference", BOUNDED, ["--steps", "6"], True),
    ("grad-inference", BOUNDED, ["--steps", "2"], False),  # fewer than 3 step boundaries
], ids=["dtype-clean-run", "dtype-crashed-run", "grad-6-steps", "grad-2-steps"])
def test_a_static_fail_the_run_saw_clean_is_demoted(project, check, text, args, demoted):
    script = write(project, "train.py", text)
    site = line(script, "# SITE")
    static, _ = doctor_json(project)
    assert [f["status"] for f in static_at(static, check, site)] == ["fail"], static
    data, stderr = doctor_json(project, "--run", "--timeout", str(HANG_S), *args)
    [finding] = static_at(data, check, site)
    assert not observed(data, check) or all(f["status"] == "pass" for f in observed(data, check)), data
    if not demoted:
        assert finding["status"] == "fail", finding
        assert data["run"]["demoted"] == []
        return
    assert finding["status"] == "warn", (finding, stderr)
    assert (site, "observed") == chain(finding)[-1]
    assert [(a["kind"], a["where"]) for a in finding["assumptions"]] == [("run-clean", site)]
    assert data["run"]["demoted"] == [{"check": check, "where": site}]
    assert data["run"]["unreached"] == []


# --- the line counter itself -------------------------------------------------------------------------


def test_only_code_holding_a_site_line_is_traced_and_its_lines_counted(tmp_path):
    import runpy

    from ohlora_cli.doctor.observed.coverage import Lines

    script = write(tmp_path, "loop.py", """
        def inner(n):
            total = 0
            for i in range(n):
                total += i  # INNER
            return total

        def never():
            return 1  # NEVER

        def other():
            return 2

        for k in range(3):
            inner(4) + other()  # OUTER
    """)
    sites = [str(tmp_path / line(script, m)) for m in ("# INNER", "# NEVER", "# OUTER")]
    events = []
    lines = Lines(sites, lambda kind, **data: events.append((kind, data)))
    lines.install()
    try:
        runpy.run_path(str(script))
    finally:
        sys.settrace(None)
    lines.flush(1)
    inner, never, outer = sites
    assert lines.counts == {inner: 12, outer: 3}
    assert events[-1] == ("lines", {"step": 1, "counts": {inner: 12, outer: 3}})
    assert [data["site"] for kind, data in events if kind == "line-reached"] == [outer, inner]
    traced = [code.co_name for code in lines._codes if lines._decided[id(code)] is not None]
    assert sorted(traced) == ["<module>", "inner"]  # not other(), not the libraries
