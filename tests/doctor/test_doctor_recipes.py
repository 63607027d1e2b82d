"""Recipe checks: the batch derivation, environment-vs-recipe checks, the preflight contract, and
the registry's handling of the per-kind probe modules (missing -> SKIP, crash -> ERROR)."""

import json
import sys
import types

import pytest
from typer.testing import CliRunner

from ohlora_cli import recipes
from ohlora_cli.cli import app
from ohlora_cli.doctor import preflight, run
from ohlora_cli.doctor.registry import Finding, Status
from ohlora_cli.errors import DataError, PreflightFailed

runner = CliRunner()


def findings_of(result, check):
    data = json.loads(result.stdout)
    return [f for f in data["findings"] if f["check"] == check]


@pytest.fixture(autouse=True)
def _plain_python(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)


def test_batch_derivation_for_planned_gpus():
    batch = ["--set", "train.batch_size=32"]  # independent of what the demo recipe uses
    ok = runner.invoke(app, ["doctor", "gan-demo", *batch, "--json", "--select", "multi-gpu-batch", "--gpus", "2"])
    assert ok.exit_code == 0, ok.output
    [row] = findings_of(ok, "multi-gpu-batch")
    assert row["status"] == "pass" and row["where"] == "train.batch_size"
    assert row["message"].startswith("16 per device x 2 process(es)") and row["message"].endswith("= 32")

    bad = runner.invoke(app, ["doctor", "gan-demo", *batch, "--json", "--select", "multi-gpu-batch", "--gpus", "3"])
    assert bad.exit_code == 1
    [row] = findings_of(bad, "multi-gpu-batch")
    assert row["status"] == "fail" and "not divisible" in row["message"] and row["where"] == "train.batch_size"


def test_batch_derivation_with_accumulation_and_torchrun(monkeypatch):
    result = runner.invoke(app, ["doctor", "llm-demo", "--json", "--select", "multi-gpu-batch",
                                 "--set", "train.max_device_batch=2"])
    [row] = findings_of(result, "multi-gpu-batch")
    assert row["message"].startswith("2 per device x 1 process(es) [python] x 4 accumulation = 8")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    result = runner.invoke(app, ["doctor", "llm-demo", "--json", "--select", "multi-gpu-batch"])
    [row] = findings_of(result, "multi-gpu-batch")
    assert row["status"] == "pass" and "2 per device x 4 process(es) [torchrun] x 1 accumulation = 8" in row["message"]


def test_precision_the_machine_lacks_is_bad_input():
    result = runner.invoke(app, ["doctor", "gan-demo", "--json", "--select", "precision",
                                 "--set", "train.precision=bf16", "--set", "train.device=auto"])
    [row] = findings_of(result, "precision")
    has_gpu = "no CUDA" not in row["message"]
    if not has_gpu:
        assert row["status"] == "fail" and row["where"] == "train.precision"
        assert result.exit_code == 1


@pytest.mark.parametrize("recipe", ["gan-demo", "llm-demo"])
def test_trackers_report_to_is_checked_before_a_launch(recipe):
    import importlib.util

    from ohlora_cli.runtime.trackers import NAMES

    installed = [n for n in NAMES if importlib.util.find_spec(n) is not None]
    missing = [n for n in NAMES if n not in installed]
    for name in installed:  # tensorboard comes with the test extra
        result = runner.invoke(app, ["doctor", recipe, "--json", "--select", "trackers",
                                     "--set", f"train.report_to=[{name}]"])
        [row] = findings_of(result, "trackers")
        assert row["status"] == "pass" and name in row["message"], row
    if not missing:
        pytest.skip("every tracker is installed here")
    result = runner.invoke(app, ["doctor", recipe, "--json", "--select", "trackers",
                                 "--set", f"train.report_to=[{missing[0]}]"])
    [row] = findings_of(result, "trackers")
    assert row["status"] == "fail" and row["where"] == "train.report_to" and missing[0] in row["message"]
    assert "pip install" in row["hint"] and result.exit_code == 1


def _fake_probe_module(monkeypatch, **functions):
    module = types.ModuleType("ohlora_cli.doctor.probes.gan")
    for name, fn in functions.items():
        setattr(module, name, fn)
    monkeypatch.setitem(sys.modules, "ohlora_cli.doctor.probes.gan", module)


def test_kind_probe_results_crashes_and_bad_input_become_rows(monkeypatch):
    def data(recipe, ctx):
        raise DataError("labels.csv row 7, column eyes_score: 'n/a' is not a number")

    def dtype_mismatch(recipe, ctx):
        assert ctx.gpus == 2
        return [Finding("dtype-mismatch", Status.FAIL, "mapping.label_weight float32 meets float64 labels",
                        where="mapping", hint="cast")]

    def grad_inference(recipe, ctx):
        raise RuntimeError("boom")

    _fake_probe_module(monkeypatch, data=data, dtype_mismatch=dtype_mismatch, grad_inference=grad_inference)
    recipe = recipes.load("gan-demo")
    report = run(recipes=[recipe], gpus=2, select=["recipe-data", "dtype-mismatch", "grad-inference"],
                 environment=False)
    rows = {f.check: f for f in report.findings}
    assert rows["recipe-data"].status is Status.FAIL and rows["recipe-data"].bad_input
    assert "row 7" in rows["recipe-data"].message
    assert rows["dtype-mismatch"].status is Status.FAIL and rows["dtype-mismatch"].where == "mapping"
    assert rows["grad-inference"].status is Status.ERROR and "boom" in rows["grad-inference"].message
    assert report.exit_code() == 1


def test_missing_probe_function_is_a_skip(monkeypatch):
    _fake_probe_module(monkeypatch)
    report = run(recipes=[recipes.load("gan-demo")], select=["grad-inference"], environment=False)
    [row] = report.findings
    assert row.status is Status.SKIP and "grad_inference" in row.message


def test_preflight_writes_nothing_and_stops_on_bad_input(tmp_path, monkeypatch):
    """The preflight returns its report and writes nothing (the run saves it as doctor.json once it
    has its output_dir); a bad-input failure stops the launch with exit 2."""
    _fake_probe_module(monkeypatch, data=lambda recipe, ctx: [], dtype_mismatch=lambda recipe, ctx: [],
                       grad_inference=lambda recipe, ctx: [])
    recipe = recipes.load("gan-demo", [f"output_dir={tmp_path / 'run'}"])
    report = preflight(recipe)
    assert report.to_dict()["ok"] is True
    checks = {f["check"] for f in report.to_dict()["findings"]}
    assert {"torch", "library-versions", "multi-gpu-batch", "disk-space", "memory", "dtype-mismatch"} <= checks
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(PreflightFailed) as stopped:
        preflight(recipe, gpus=3)  # 32 images cannot be split over 3 processes
    assert stopped.value.exit_code == 2
    assert "train.batch_size" in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


def test_preflight_failure_that_is_not_bad_input_exits_1(tmp_path, monkeypatch):
    def grad_inference(recipe, ctx):
        return [Finding("grad-inference", Status.FAIL, "sample() retains 1.2 MB per call")]

    _fake_probe_module(monkeypatch, data=lambda recipe, ctx: [], dtype_mismatch=lambda recipe, ctx: [],
                       grad_inference=grad_inference)
    recipe = recipes.load("gan-demo", [f"output_dir={tmp_path}"])
    with pytest.raises(PreflightFailed) as stopped:
        preflight(recipe)
    assert stopped.value.exit_code == 1


def doctor_gan_data(tmp_path, labels, *overrides):
    """``ohlora doctor gan-demo --select recipe-data`` on 4 real 16 px images whose CSV rows carry
    ``labels(n)`` (the brightness and position cells of row n)."""
    from PIL import Image

    rows = ["img_path,brightness,position"]
    for n in range(4):
        Image.new("RGB", (16, 16), (40 * n, 80, 120)).save(tmp_path / f"{n}.png")
        rows.append(f"{n}.png,{','.join(map(str, labels(n)))}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return runner.invoke(app, ["doctor", "gan-demo", "--json", "--select", "recipe-data",
                               "--set", f"data.csv={tmp_path / 'labels.csv'}", "--set", "data.synthetic=null",
                               "--set", f"output_dir={tmp_path / 'run'}", *overrides])


def test_real_gan_probe_reports_a_bad_label_cell_through_the_cli(tmp_path):
    result = doctor_gan_data(tmp_path, lambda n: ("n/a" if n == 2 else n / 2, -n / 3))
    assert result.exit_code == 1, result.output
    [row] = findings_of(result, "recipe-data")
    assert row["status"] == "fail"
    assert "labels.csv" in row["message"] and "brightness" in row["message"]


@pytest.mark.parametrize(("scale", "standardize", "warned"), [
    (0.1, False, True),  # raw labels with sd ~0.04 and ~0.05: far from z-scores
    (1.0, False, False),  # raw labels with sd ~0.4 and ~0.5: near enough
    (0.1, True, False),  # the same small labels, standardised by the run
])
def test_gan_probe_warns_of_raw_labels_far_from_z_scores(tmp_path, scale, standardize, warned):
    result = doctor_gan_data(tmp_path, lambda n: (scale * n / 3, -scale * n / 2.5),
                             "--set", f"data.standardize_labels={str(standardize).lower()}")
    assert result.exit_code == 0, result.output
    warns = [r for r in findings_of(result, "recipe-data") if r["status"] == "warn"
             and r["where"] != "train.batch_size"]  # 4 rows, batch 16: that WARN is another test's
    assert bool(warns) == warned, warns
    if warned:
        [row] = warns
        assert "brightness mean 0.05, sd 0.0373" in row["message"] and "position mean" in row["message"]
        assert row["where"] == "data.standardize_labels"


@pytest.mark.parametrize(("gpus", "weights"), [
    ([], "float32"),  # no card: fp32 on the CPU
    ([{"name": "sim T4", "total": 16 << 30, "free": 15 << 30, "capability": [7, 5]}], "float16"),
    ([{"name": "sim A100", "total": 80 << 30, "free": 79 << 30, "capability": [8, 0]},
      {"name": "sim H100", "total": 80 << 30, "free": 79 << 30, "capability": [9, 0]}], "bfloat16"),
])
def test_llm_dtype_probe_runs_in_the_precision_planned_for_the_card(gpus, weights):
    """The probe asks the environment probe's subprocess which card the run gets (here a simulated
    one) and runs the real model's forward + backward on the meta device in that precision; it makes
    no CUDA query of its own, so a hung driver cannot hang the doctor."""
    import torch

    from ohlora_cli.doctor.env import Environment
    from ohlora_cli.doctor.probes import llm
    from ohlora_cli.doctor.registry import Context

    recipe = recipes.load("llm-demo", ["train.device=auto", "train.precision=auto"])
    env = Environment(data={"torch": torch.__version__, "cuda_available": bool(gpus), "gpus": gpus})
    [row] = llm.dtype_mismatch(recipe, Context("recipe", recipe=recipe, env=env))
    assert row.status is Status.PASS, row.message
    assert f"weights {weights}" in row.message and "LoRA grads float32" in row.message
    assert not torch.cuda.is_initialized()
