"""``ohlora doctor SCRIPT.py --run``, grad-inference beyond growth: a graph built with autograd on,
never backpropagated and kept alive across optimizer steps without growing (a FAIL, "kept"); a
static FAIL the run saw rising is never demoted; a constructor's probe forward is setup, not a
per-call waste. Real small scripts, run through the CLI in a child process; nothing is mocked."""


import pytest
from bounds import HANG_S
from observing import doctor_json, line, observe, observed
from scripts import write

# --- kept: rebuilt every 2 steps with autograd on, held in a variable between ----------------------

SAMPLES = """
    import torch
    from torch import nn

    G = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 48))
    opt = torch.optim.SGD(G.parameters(), lr=1e-3)
    fixed_z = torch.randn(16, 8)
    samples = None
    for step in range(100):
        loss = G(torch.randn(16, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 2 == 0:
            samples = G(fixed_z)  # SAMPLES
"""


def test_samples_kept_with_autograd_on_are_a_fail_with_the_line_and_the_holder(project):
    script = write(project, "train.py", SAMPLES)
    result, data = observe("train.py", "--steps", "8")
    assert data["run"]["steps"] == 8, result.output
    [fail] = observed(data, "grad-inference", "fail")
    assert fail["where"] == line(script, "# SAMPLES"), result.output
    assert "`samples`" in fail["message"], fail
    assert "Nothing" not in fail["message"] and "nothing survived" not in fail["message"].lower(), fail
    assert ("kept-by" in [step["role"] for step in fail["evidence"]]), fail
    assert not observed(data, "grad-inference", "warn"), result.output


@pytest.mark.parametrize("text", [
    SAMPLES.replace("samples = G(fixed_z)  # SAMPLES",
                    "with torch.no_grad():\n                samples = G(fixed_z)  # SAMPLES"),
    SAMPLES.replace("if step % 2 == 0:\n            samples = G(fixed_z)  # SAMPLES", "last = loss"),
], ids=["no-grad-twin", "last-loss-after-backward"])
def test_samples_under_no_grad_and_a_kept_loss_are_clean(project, text):
    write(project, "train.py", text)
    result, data = observe("train.py", "--steps", "8")
    assert data["run"]["steps"] == 8, result.output
    assert not observed(data, "grad-inference", "fail"), result.output
    assert not observed(data, "grad-inference", "warn"), result.output


def test_a_preview_rebuilt_every_step_is_a_warn_that_never_says_nothing_survived(project):
    """Each preview lives across one boundary only (replaced by the next): waste, not kept; the
    census saw it alive at the boundaries, so the WARN must not say nothing from it was."""
    script = write(project, "train.py", SAMPLES.replace("if step % 2 == 0:\n            ", ""))
    result, data = observe("train.py", "--steps", "6")
    assert not observed(data, "grad-inference", "fail"), result.output
    [warn] = observed(data, "grad-inference", "warn")
    assert warn["where"] == line(script, "# SAMPLES"), result.output
    assert "nothing" not in warn["message"].lower(), warn


# A GAN whose discriminator steps first, twice per generator step, on one batch of fakes: the
# generator's graph is alive (and unused) across the discriminator's boundaries, then backpropagated.
CRITIC = """
    import torch
    from torch import nn

    G = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
    D = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt_d = torch.optim.SGD(D.parameters(), lr=1e-3)
    opt_g = torch.optim.SGD(G.parameters(), lr=1e-3)
    for it in range(100):
        fake = G(torch.randn(16, 8))  # FAKE
        for _ in range(2):
            d_loss = D(fake.detach()).mean() - D(torch.randn(16, 16)).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        g_loss = -D(fake).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
"""


def test_a_generator_graph_waiting_for_its_backward_across_the_critic_steps_is_not_kept(project):
    write(project, "train.py", CRITIC)
    result, data = observe("train.py", "--steps", "6")
    assert data["run"]["steps"] == 6, result.output
    assert not observed(data, "grad-inference", "fail"), result.output


# --- setup: a probe forward in a constructor ---------------------------------------------------------

PROBE = """
    import torch
    from torch import nn


    class Detector(nn.Module):
        def __init__(self, size=32):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.stride = size / self.forward(torch.zeros(1, 3, size, size)).shape[-1]

        def forward(self, x):
            return self.body(x)  # PROBE


    models = [Detector(), Detector()]
    opt = torch.optim.SGD([p for m in models for p in m.parameters()], lr=0.01)
    for step in range(10):
        loss = sum(m(torch.randn(2, 3, 32, 32)).pow(2).mean() for m in models)
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def test_a_constructor_probe_forward_is_setup_not_waste(project):
    write(project, "train.py", PROBE)
    result, data = observe("train.py", "--steps", "4")
    assert data["run"]["steps"] == 4, result.output
    assert not observed(data, "grad-inference", "warn"), result.output
    assert not observed(data, "grad-inference", "fail"), result.output


# --- demotion: never for a site the run saw rising -------------------------------------------------

RISING = """
    import torch
    from torch import nn

    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    total = 0
    for step in range(100):
        loss = model(torch.randn(16, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        KEEP
"""


@pytest.mark.parametrize("keep", ["losses.append(loss)  # SITE", "total += loss  # SITE"],
                         ids=["growth-under-the-model-line", "growth-under-its-own-line"])
def test_a_static_fail_the_run_saw_rising_is_not_demoted(project, keep):
    """3 steps: the kept graphs rose once between the 2 boundaries that count, short of the 2 rises
    growth needs; the run did not see it clean, so the static FAIL stays a FAIL."""
    script = write(project, "train.py", RISING.replace("KEEP", keep))
    site = line(script, "# SITE")
    static, _ = doctor_json(project)
    assert [f["status"] for f in static["findings"] if f["check"] == "grad-inference" and f["where"] == site] \
        == ["fail"], static
    data, _ = doctor_json(project, "--run", "--timeout", str(HANG_S), "--steps", "3")
    assert data["run"]["steps"] == 3, data["run"]
    assert not observed(data, "grad-inference", "fail"), data
    [finding] = [f for f in data["findings"] if f["check"] == "grad-inference" and f["where"] == site]
    assert finding["status"] == "fail", finding
    assert data["run"]["demoted"] == []
