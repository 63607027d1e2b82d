"""``ohlora doctor SCRIPT.py --run`` takes its torch-function mode off the stack for each optimizer
step (``observed/stepping.py``): nothing the user does around the steps may be lost by it. Real
scripts in the child process, as in test_run.py: steps that raise and are caught, a step inside a
user function, an optimizer that steps another inside its own step, a user-written step whose ops
would be findings if they were attributed to the user's lines, and a step that crashes the run."""

from scripts import write
from test_run import found, lines, observe

STEPS = """
    import numpy as np
    import torch
    from torch import nn


    class Outer(torch.optim.Optimizer):
        # steps an inner SGD inside its own step (a wrapper optimizer)

        def __init__(self, params):
            params = list(params)
            super().__init__(params, {})
            self.inner = torch.optim.SGD(params, lr=0.01)

        def step(self, closure=None):
            return self.inner.step()


    class Skipping(torch.optim.Optimizer):
        # from its third step on, each step raises before updating (a skipped update)

        def __init__(self, params):
            super().__init__(params, {})
            self.calls = 0

        @torch.no_grad()
        def step(self, closure=None):
            self.calls += 1
            if self.calls >= 3:
                raise RuntimeError("skipped update")
            for group in self.param_groups:
                for p in group["params"]:
                    wide = p.grad.double()  # INSIDE
                    p.copy_(p + wide * 0)  # INSIDE


    model = nn.Linear(4, 1)
    opt = Outer(model.parameters())
    skip = Skipping(model.parameters())
    x = torch.randn(32, 4)
    y = torch.as_tensor(np.linspace(0, 1, 32))  # BORN
    total = 0


    def train_step():
        loss = (model(x).squeeze(-1) - y.float()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        try:
            skip.step()
        except RuntimeError:
            pass
        return loss


    for i in range(50):
        loss = train_step()
        if i >= 2:  # after a step that raised, before the next step
            with torch.no_grad():
                gap = model(x).squeeze(-1) - y  # MEETS
            total += loss  # TOTAL
"""


def test_findings_around_steps_survive_a_step_that_raised(project):
    script = write(project, "train.py", STEPS)
    result, data = observe(project, "train.py", "--steps", "10")
    assert result.exit_code in (0, 1), result.output
    assert data["run"]["steps"] == 10, result.output  # the inner SGD's (the first optimizer whose step ends)
    assert found(data, "observed-run", "pass"), result.output  # stopped at its steps, no crash
    warns = found(data, "dtype-mismatch", "warn")
    assert [w["where"] for w in warns] == [f"train.py:{lines(script, '# MEETS')[0]}"], result.output
    assert f"train.py:{lines(script, '# BORN')[0]}" in warns[0]["message"]
    fails = found(data, "grad-inference", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{lines(script, '# TOTAL')[0]}"], result.output
    assert "`total`" in fails[0]["message"]
    inside = {f"train.py:{n}" for n in lines(script, "# INSIDE")}
    assert not [f for f in data["findings"] if f["where"] in inside and f["message"].startswith("observed")], \
        result.output


CRASH = """
    import torch
    from torch import nn


    class Failing(torch.optim.SGD):
        def step(self, closure=None):
            if self.state.get("calls", 0) == 2:
                raise ValueError("bad update")  # CRASH (the innermost user line)
            self.state["calls"] = self.state.get("calls", 0) + 1
            return super().step(closure)


    model = nn.Linear(4, 1)
    opt = Failing(model.parameters(), lr=0.01)
    for i in range(20):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def test_a_step_that_crashes_the_run_is_reported_at_its_line(project):
    script = write(project, "train.py", CRASH)
    result, data = observe(project, "train.py")
    crashes = found(data, "observed-run", "fail")
    assert [c["where"] for c in crashes] == [f"train.py:{lines(script, '# CRASH')[0]}"], result.output
    assert "bad update" in crashes[0]["message"]
    assert data["run"]["steps"] == 2, result.output
