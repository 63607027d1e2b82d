"""``ohlora doctor SCRIPT.py --run``: real small scripts, written here, run in the child process
under the instruments; the findings (check, status, file:line) and the user's files are
asserted. Nothing is mocked: each test pays one child process (torch import and a few steps)."""

import json

import pytest
from bounds import HANG_S
from scripts import write
from snapshots import difference, snapshot
from typer.testing import CliRunner

from ohlora_cli.cli import app

runner = CliRunner()


def lines(path, marker):
    """1-based line numbers of the lines of ``path`` holding ``marker``."""
    return [i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line]


def observe(folder, script, *extra):
    result = runner.invoke(app, ["doctor", script, "--run", "--json", "--timeout", str(HANG_S), *extra])
    assert "Traceback" not in result.stdout, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return result, data


def found(data, check, status):
    """The observed run's findings of ``check`` with ``status`` (not the static analysis')."""
    return [f for f in data["findings"] if f["check"] == check and f["status"] == status
            and (f["check"].startswith("observed-") or f["message"].startswith("observed"))]


# --- grad-inference, the sandbox and the CUDA shim, in one run -------------------------------------

LEAK = """
    import os, shutil
    import torch
    from torch import nn

    G = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3 * 4 * 4)).cuda()
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    fixed_z = torch.randn(4, 8, device="cuda")
    samples = []
    os.makedirs("checkpoints/latest", exist_ok=True)
    for step in range(100):
        z = torch.randn(16, 8).to("cuda")
        loss = G(z).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        images = G(fixed_z)
        samples.append(images)
        torch.save(G.state_dict(), "checkpoints/latest/tmp.pt")
        os.replace("checkpoints/latest/tmp.pt", "checkpoints/latest/G.pt")
        with open("log.txt", "a") as f:
            f.write(f"{step} {loss.item()}\\n")
        os.makedirs("scratch", exist_ok=True)
        open("scratch/x.txt", "w").close()
        shutil.rmtree("scratch")
        try:
            os.remove("data.csv")  # BLOCKED
        except PermissionError:
            pass
        try:
            shutil.rmtree("images")  # BLOCKED
        except PermissionError:
            pass
        try:
            os.rename("data.csv", "old.csv")  # BLOCKED
        except PermissionError:
            pass
"""


def test_growth_is_a_fail_with_its_holder_and_the_project_is_untouched(project, tmp_path):
    script = write(project, "train.py", LEAK)
    write(project, "data.csv", "a,b\n1,2\n")
    (project / "images").mkdir()
    write(project / "images", "0.txt", "pixels")
    before = snapshot(tmp_path / "proj")
    result, data = observe(project, "train.py")
    assert difference(before, snapshot(tmp_path / "proj")) == {}, result.output
    assert result.exit_code == 1, result.output
    sample_line = lines(script, "images = G(fixed_z)")[0]
    fails = found(data, "grad-inference", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{sample_line}"], result.output
    assert "`samples`" in fails[0]["message"]
    assert found(data, "observed-run", "pass"), result.output
    blocked = found(data, "observed-writes", "warn")
    assert sorted(f["where"] for f in blocked) == [f"train.py:{n}" for n in lines(script, "# BLOCKED")]
    assert data["run"]["steps"] == 6
    sandbox = data["run"]["sandbox"]
    copy = f"{sandbox}/files{project}/checkpoints/latest/G.pt"
    import torch

    assert set(torch.load(copy, weights_only=True)) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_clean_twin_and_one_off_waste(project, tmp_path):
    """Samples drawn under no_grad and kept: nothing. A preview drawn with autograd on and then
    dropped: a WARN (waste), not growth."""
    script = write(project, "train.py", LEAK.replace(
        "images = G(fixed_z)", "with torch.no_grad():\n            images = G(fixed_z)").replace(
        "samples.append(images)", "preview = G(fixed_z)\n        samples.append(images)"))
    result, data = observe(project, "train.py", "--steps", "5")
    assert not found(data, "grad-inference", "fail"), result.output
    warns = found(data, "grad-inference", "warn")
    assert [w["where"] for w in warns] == [f"train.py:{lines(script, 'preview = G(fixed_z)')[0]}"], result.output
    assert data["run"]["steps"] == 5


# --- dtype-mismatch: the Oh-LoRA shape -------------------------------------------------------------

LABELS = """
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class Faces(Dataset):
        def __init__(self, csv):
            table = pd.read_csv(csv)
            self.labels = table[["eyes", "mouth"]].values  # CAST
            self.z = np.random.default_rng(0).standard_normal((len(table), 8)).astype(np.float32)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return torch.from_numpy(self.z[i]), torch.tensor(self.labels[i])  # BORN

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.label_weight = nn.Parameter(torch.randn(2, 8))
            self.net = nn.Linear(8, 12)

        def forward(self, z, label):
            return self.net(z + torch.matmul(label, self.label_weight))  # MEETS

    G = Generator()
    opt = torch.optim.SGD(G.parameters(), lr=0.01)
    loader = DataLoader(Faces("labels.csv"), batch_size=4)
    for epoch in range(10):
        for z, label in loader:
            loss = G(z, label).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
"""


@pytest.mark.parametrize("fixed", [False, True], ids=["float64-labels", "cast-twin"])
def test_float64_labels_meet_the_label_weight(project, fixed):
    text = LABELS.replace('.values  # CAST', '.values.astype("float32")  # CAST') if fixed else LABELS
    script = write(project, "train.py", text)
    write(project, "labels.csv", "eyes,mouth\n" + "".join(f"{i * 0.1},{1 - i * 0.1}\n" for i in range(16)))
    result, data = observe(project, "train.py")
    if fixed:
        assert not found(data, "dtype-mismatch", "fail") and not found(data, "dtype-mismatch", "warn"), result.output
        assert found(data, "observed-run", "pass") and data["run"]["steps"] == 6
        return
    assert result.exit_code == 1
    fails = found(data, "dtype-mismatch", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{lines(script, '# MEETS')[0]}"], result.output
    assert f"train.py:{lines(script, '# BORN')[0]}" in fails[0]["message"]
    assert "Generator.label_weight" in fails[0]["message"]
    assert not found(data, "observed-run", "fail"), "the crash is attached to the finding, not a row of its own"


# --- cuda-visible-devices-late, the time limit, a crash ---------------------------------------------

LATE = """
    import os
    import time
    import torch

    USE_CUDA = torch.cuda.is_available()  # QUERY
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"  # LATE
    while True:  # "loading data" for longer than the time limit
        time.sleep(1)
"""


def test_late_cuda_visible_devices_is_reported_after_the_time_limit(project):
    """The child is killed at --timeout; what it streamed before is still reported."""
    script = write(project, "train.py", LATE)
    result = runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", "120"])
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 1, result.output
    assert data["run"]["timed_out"] is True
    fails = found(data, "cuda-visible-devices-late", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{lines(script, '# LATE')[0]}"], result.output
    assert f"train.py:{lines(script, '# QUERY')[0]}" in fails[0]["message"]
    assert found(data, "observed-run", "warn"), result.output


CRASH = """
    import os
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    import sys
    import torch
    from torch import nn

    assert sys.argv[1:] == ["--lr", "0.1"], sys.argv
    model = nn.Linear(3, 1).to("cuda" if torch.cuda.is_available() else "cpu")
    opt = torch.optim.SGD(model.parameters(), lr=float(sys.argv[2]))
    for step in range(10):
        loss = model(torch.randn(5, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 3:
            raise ValueError("bad batch")  # CRASH
"""


def test_script_args_env_set_first_and_a_crash_with_its_line(project):
    script = write(project, "train.py", CRASH)
    result, data = observe(project, "train.py", "--", "--lr", "0.1")
    assert result.exit_code == 1, result.output
    assert not found(data, "cuda-visible-devices-late", "fail"), result.output
    assert not found(data, "cuda-visible-devices-late", "warn"), result.output
    crashes = found(data, "observed-run", "fail")
    assert [c["where"] for c in crashes] == [f"train.py:{lines(script, '# CRASH')[0]}"], result.output
    assert data["run"]["steps"] == 4


@pytest.mark.parametrize("args", [["missing.py", "--run"], ["--run"], ["recipe.yaml", "--run"]])
def test_bad_input_is_one_message_and_exit_2(project, args):
    result = runner.invoke(app, ["doctor", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_help_says_the_script_is_executed():
    result = runner.invoke(app, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "--run" in result.output and "EXECUTE" in result.output


# --- a running total of the loss tensor, float64 targets promoting the loss -------------------------

TOTAL = """
    import numpy as np
    import torch
    from torch import nn

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 4)
    y = torch.as_tensor(np.linspace(0, 1, 32))  # BORN
    total_loss = 0
    for step in range(20):
        loss = (model(x).squeeze(-1) - y).pow(2).mean()  # PROMOTES
        opt.zero_grad()
        loss.backward()
        opt.step()
        total_loss += loss  # TOTAL
"""


@pytest.mark.parametrize("fixed", [False, True], ids=["tensor-total", "item-twin"])
def test_running_total_grows_and_float64_targets_promote(project, fixed):
    text = TOTAL.replace("total_loss += loss", "total_loss += loss.item()").replace(
        "np.linspace(0, 1, 32))", "np.linspace(0, 1, 32), dtype=torch.float32)") if fixed else TOTAL
    script = write(project, "train.py", text)
    result, data = observe(project, "train.py")
    if fixed:
        assert not [f for f in data["findings"] if f["status"] in ("warn", "fail")
                    and f["message"].startswith("observed")], result.output
        return
    fails = found(data, "grad-inference", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{lines(script, '# TOTAL')[0]}"], result.output
    assert "`total_loss`" in fails[0]["message"]
    warns = found(data, "dtype-mismatch", "warn")
    assert [w["where"] for w in warns] == [f"train.py:{lines(script, '# PROMOTES')[0]}"], result.output
    assert f"train.py:{lines(script, '# BORN')[0]}" in warns[0]["message"]


# --- multi-gpu-batch: the batch derived from the GPU count, simulated --------------------------------

DP = """
    import torch
    from torch import nn

    n_gpu = torch.cuda.device_count()  # COUNT
    batch_size = 8 * max(1, n_gpu)  # BATCH
    model = nn.DataParallel(nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(10):
        x = torch.randn(batch_size, 4)
        loss = nn.MSELoss()(model(x), torch.zeros(batch_size, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


@pytest.mark.parametrize("fixed", [False, True], ids=["per-gpu-batch", "global-batch-twin"])
def test_batch_multiplied_by_the_simulated_gpus(project, fixed):
    script = write(project, "train.py", DP.replace("8 * max(1, n_gpu)", "8") if fixed else DP)
    result, data = observe(project, "train.py", "--gpus", "2", "--steps", "2")
    assert not found(data, "observed-run", "fail"), result.output
    fails = found(data, "multi-gpu-batch", "fail")
    if fixed:
        assert not fails, result.output
        return
    assert [f["where"] for f in fails] == [f"train.py:{lines(script, '# COUNT')[0]}"], result.output
    assert "8 with 1 GPU, 16 with 2" in fails[0]["message"]


def test_a_line_cut_off_by_the_kill_is_dropped(tmp_path):
    from ohlora_cli.doctor.observed.events import EventLog, read_events

    path = tmp_path / "events.jsonl"
    log = EventLog(str(path))
    log.emit("env-set", where="train.py:3", value="0")
    log.emit("cuda", where="train.py:2", call="is_available")
    with open(path, "a") as f:
        f.write('{"kind": "census", "step": 1, "si')  # the child was killed mid-write
    events = read_events(path)
    assert [(e.kind, e.where, e.role) for e in events] == [("env-set", "train.py:3", "env-set"),
                                                           ("cuda", "train.py:2", "cuda-init")]


TRAINER = """
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 1)

        def forward(self, x, labels):
            return {"loss": (self.head(x).squeeze(-1) - labels).pow(2).mean()}

    rows = [{"x": torch.randn(4), "labels": torch.tensor(0.5)} for _ in range(256)]
    args = TrainingArguments(  # CONFIG
        output_dir="out", per_device_train_batch_size=8, max_steps=20, report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0)
    Trainer(model=Regressor(), args=args, train_dataset=rows).train()
"""


def test_trainer_batch_multiplied_by_the_simulated_gpus(project, tmp_path):
    script = write(project, "train.py", TRAINER)
    before = snapshot(tmp_path / "proj")
    result, data = observe(project, "train.py", "--gpus", "2", "--steps", "2")
    assert difference(before, snapshot(tmp_path / "proj")) == {}, result.output
    assert not found(data, "observed-run", "fail"), result.output
    fails = found(data, "multi-gpu-batch", "fail")
    assert [f["where"] for f in fails] == [f"train.py:{lines(script, '# CONFIG')[0]}"], result.output
    assert "8 with 1 GPU, 16 with 2" in fails[0]["message"]
