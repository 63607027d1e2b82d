"""Where the observed run files what it saw: growth built through torch's dispatch
(``torch/overrides.py``), a module buffer updated in place with autograd on, a root built by library
code, and float64 passed by keyword. Each script runs for real under ``ohlora doctor SCRIPT.py
--run``; the findings' sites, holders and evidence are asserted."""

import json

from bounds import HANG_S
from scripts import write
from typer.testing import CliRunner

from ohlora_cli.cli import app

runner = CliRunner()


def line_of(path, marker):
    """The 1-based number of the one line of ``path`` holding ``marker``."""
    found = [i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line]
    assert len(found) == 1, found
    return found[0]


def observe(script, *extra):
    result = runner.invoke(app, ["doctor", script, "--run", "--json", "--timeout", str(HANG_S), *extra])
    assert "Traceback" not in result.stdout, result.output
    return result, json.loads(result.stdout.strip().splitlines()[-1])


ORDER = {c: i for i, c in enumerate(("dtype-mismatch", "grad-inference", "multi-gpu-batch",
                                     "cuda-visible-devices-late"))}


def observed(data, check, status):
    """The observed run's findings of ``check`` with ``status``: the JSON's last section, which
    starts at its first ``observed-*`` row or where the checks' order starts over (the static
    section lists every check first)."""
    rows = data["findings"]
    start = next((i for i, f in enumerate(rows) if f["check"].startswith("observed-")
                  or (i and ORDER.get(f["check"], 0) < ORDER.get(rows[i - 1]["check"], 0))), len(rows))
    return [f for f in rows[start:] if f["check"] == check and f["status"] == status]


# --- growth whose root was built through torch/overrides.py --------------------------------------

LOSSES = """
    import torch
    import torch.nn.functional as F
    from torch import nn

    model = nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(50):
        x, y = torch.randn(32, 7), torch.randn(32, 1)
        out = model(x)
        loss = F.mse_loss(out, y)  # LOSS
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append({keep})
"""


def test_a_loss_built_by_a_functional_and_kept_is_growth_at_the_users_line(project):
    script = write(project, "train.py", LOSSES.format(keep="loss"))
    result, data = observe("train.py")
    fails = observed(data, "grad-inference", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{line_of(script, '# LOSS')}"], result.output
    assert "`losses`" in fails[0]["message"]
    assert "overrides.py" not in result.stdout


def test_the_same_loop_keeping_item_is_clean(project):
    write(project, "train.py", LOSSES.format(keep="loss.item()"))
    result, data = observe("train.py")
    assert not observed(data, "grad-inference", "fail"), result.output
    assert observed(data, "grad-inference", "pass"), result.output


# --- a module buffer updated in place in forward (GenForce's w_avg) ------------------------------

W_AVG = """
    import torch
    from torch import nn

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.mapping = nn.Linear(8, 8)
            self.synthesis = nn.Linear(8, 12)
            self.register_buffer("w_avg", torch.zeros(8))

        def forward(self, z):
            w = self.mapping(z)
            if self.training:
                {update}
            return self.synthesis(w)

    def main():
        G = Generator()
        opt = torch.optim.Adam(G.parameters(), lr=1e-3)
        for step in range(50):
            loss = G(torch.randn(4, 8)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    main()
"""
LEAKY = "self.w_avg.copy_(torch.lerp(w.mean(0), self.w_avg, 0.995))  # UPDATE"


def test_a_buffer_updated_in_forward_with_autograd_on_is_growth_held_by_the_buffer(project):
    script = write(project, "train.py", W_AVG.format(update=LEAKY))
    result, data = observe("train.py")
    fails = observed(data, "grad-inference", "fail")
    update = f"train.py:{line_of(script, '# UPDATE')}"
    assert [f["where"] for f in fails] == [update], result.output
    assert "buffer `G.w_avg`" in fails[0]["message"]
    assert "no_grad" in fails[0]["hint"]
    kept = [s for s in fails[0]["evidence"] if s["role"] == "kept-by"]
    assert [(s["where"], s["what"]) for s in kept] == [(update, "buffer `G.w_avg`")]


def test_the_same_buffer_updated_under_no_grad_is_clean(project):
    write(project, "train.py", W_AVG.format(update="with torch.no_grad():\n                    " + LEAKY))
    result, data = observe("train.py")
    assert not observed(data, "grad-inference", "fail"), result.output


# --- a kept root built by library code (no user line on it): filed under the graph it reaches -----

DISTRIBUTION = """
    import torch
    from torch import nn

    policy = nn.Linear(4, 2)
    opt = torch.optim.SGD(policy.parameters(), lr=1e-2)
    history = []
    for step in range(50):
        x, a = torch.randn(8, 4), torch.randn(8, 2)
        mean = policy(x)  # POLICY
        loss = -torch.distributions.Normal(mean, 1.0).log_prob(a).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(torch.distributions.Normal(mean, 1.0).log_prob(a))
"""


def test_an_untagged_kept_root_is_filed_under_the_first_user_line_its_graph_reaches(project):
    script = write(project, "train.py", DISTRIBUTION)
    result, data = observe("train.py")
    fails = observed(data, "grad-inference", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{line_of(script, '# POLICY')}"], result.output
    assert "`history`" in fails[0]["message"]


# --- float64 passed by keyword -------------------------------------------------------------------

KEYWORD = """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    counts = np.array([30, 10, 50, 10])
    weights = torch.tensor(counts.sum() / (4 * counts)){cast}  # BORN
    model = nn.Linear(10, 4)
    criterion = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for step in range(3):
        x, y = torch.randn(16, 10), torch.randint(0, 4, (16,))
        loss = {call}  # CALL
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def test_float64_passed_by_keyword_is_seen_and_the_keyword_named(project):
    for call in ("F.cross_entropy(model(x), y, weight=weights)", "criterion(model(x), y)"):
        script = write(project, "train.py", KEYWORD.format(cast="", call=call))
        result, data = observe("train.py")
        fails = observed(data, "dtype-mismatch", "fail")
        call_at, born_at = (f"train.py:{line_of(script, m)}" for m in ("# CALL", "# BORN"))
        assert [f["where"] for f in fails] == [call_at], (call, result.output)
        steps = fails[0]["evidence"]
        assert [s["where"] for s in steps if s["role"] == "born"] == [born_at]
        meets = [s for s in steps if s["role"] == "meets"]
        assert [s["where"] for s in meets] == [call_at]
        assert "weight=" in meets[0]["what"] and "weight=" in fails[0]["message"]
        assert "overrides.py" not in result.stdout


def test_float32_weights_by_keyword_are_clean(project):
    write(project, "train.py", KEYWORD.format(cast=".float()", call="F.cross_entropy(model(x), y, weight=weights)"))
    result, data = observe("train.py")
    assert not observed(data, "dtype-mismatch", "fail") and not observed(data, "dtype-mismatch", "warn"), \
        result.output
    assert observed(data, "dtype-mismatch", "pass"), result.output
