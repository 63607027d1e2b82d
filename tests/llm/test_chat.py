"""``ohlora chat`` on the LLM demo's run, trained here (the demo recipe, tiny model built in the run,
with TensorBoard on): ``--prompt`` gives the trained answers exactly, the interactive mode is driven
through a pseudo-terminal, and the run's TensorBoard event file is read back with tensorboard's own
reader."""

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pexpect
import pytest
import yaml
from bounds import HANG_S
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.errors import BadInputError
from ohlora_cli.llm import chat as engine
from ohlora_cli.llm import data as llm_data
from ohlora_cli.llm.generate import generate_answers

runner = CliRunner()
ASKED = 8  # training rows the tests ask about


def demo_rows():
    path = Path(str(resources.files("ohlora_cli"))) / "data" / "llm-demo-dialogue.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["input_data"], r["output_data"]) for r in csv.DictReader(fh) if r["data_type"] == "train"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo recipe, as a user runs it, with TensorBoard: 40 epochs of 6 steps (about 20 s)."""
    out = tmp_path_factory.mktemp("chat") / "run"
    result = runner.invoke(app, ["train-llm", "llm-demo", "--skip-doctor", "--set", f"output_dir={out}",
                                 "--set", f"model.path={out / 'tiny-model'}", "--set", "generate.every_epoch=false",
                                 "--set", "train.report_to=[tensorboard]"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def trained_answers(demo_run):
    """What the run's own generation function (greedy, stopped on the marker) answers, per question."""
    model = engine.load(demo_run)
    questions = [q for q, _ in demo_rows()[:ASKED]]
    prompts = [llm_data.generation_prompt(q, model.cfg.data, model.tokenizer) for q in questions]
    answers = generate_answers(model.model, model.tokenizer, prompts, end_marker=model.end_marker, max_new_tokens=32)
    return {q: a["answer"] for q, a in zip(questions, answers, strict=True)}


def chat(*args):
    return runner.invoke(app, ["chat", *map(str, args)])


def test_prompt_gives_the_trained_answers_exactly(demo_run, trained_answers):
    learned = [(q, want) for q, want in demo_rows()[:ASKED] if trained_answers[q] == want]
    assert len(learned) >= ASKED // 2, trained_answers  # the demo taught its model its training answers
    for question, _ in demo_rows()[:ASKED]:
        result = chat(demo_run, "--prompt", question)
        assert result.exit_code == 0, result.output
        assert result.stdout == trained_answers[question] + "\n"  # the run's own greedy answer, alone
    question, want = learned[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ohlora_cli", "chat", str(demo_run), "--prompt", question],
                          capture_output=True, text=True, env=env, timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout == want + "\n"  # scriptable: stdout holds the answer and nothing else


def test_streamed_text_is_the_answer(demo_run, trained_answers):
    model = engine.load(demo_run)
    question = demo_rows()[0][0]
    chunks = []
    result = engine.answer(model, engine.Conversation(model, 32).prompt(question), max_new_tokens=32,
                           on_text=chunks.append)
    assert len(chunks) > 3  # token by token, not in one piece at the end
    assert "".join(chunks) == result.text == trained_answers[question]
    assert result.stopped == "end_marker" and "(answer end)" not in "".join(chunks)


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="unsloth not installed")
def test_unsloth_backend_gives_the_same_answer(demo_run, trained_answers, tmp_path):
    question = demo_rows()[3][0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ohlora_cli", "chat", str(demo_run), "--prompt", question,
                           "--backend", "unsloth", "--verbose"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unsloth" in done.stderr  # it was unsloth that loaded the model (its banner, shown by --verbose)
    assert done.stdout == trained_answers[question] + "\n"
    assert list(tmp_path.iterdir()) == []  # nothing written in the current directory


def test_sampling_is_seeded(demo_run):
    question = demo_rows()[1][0]
    first = chat(demo_run, "--prompt", question, "--temperature", 1.5, "--seed", 3)
    again = chat(demo_run, "--prompt", question, "--temperature", 1.5, "--seed", 3)
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout


def test_history_follows_the_template_and_drops_the_oldest_turns(demo_run):
    model = engine.load(demo_run)
    conversation = engine.Conversation(model, max_new_tokens=8)
    (q1, a1), (q2, a2), (q3, _) = demo_rows()[:3]
    assert conversation.prompt(q1) == f"{q1} (answer start) ### answer:"  # the first turn: the training prompt
    conversation.add(q1, a1)
    assert conversation.prompt(q2) == f"{q1} (answer start) ### answer: {a1} (answer end)\n{q2} (answer start) ### answer:"
    assert conversation.dropped == 0
    conversation.add(q2, a2)
    rendered = conversation.prompt(q3)  # three turns exceed the tiny model's 64 positions
    assert model.context == 64 and conversation.dropped >= 1
    assert rendered.endswith(f"{q3} (answer start) ### answer:") and not rendered.startswith(q1)
    assert conversation.tokens(rendered) + 8 <= 64
    conversation.reset()
    assert conversation.prompt(q3) == f"{q3} (answer start) ### answer:"
    with pytest.raises(BadInputError, match="does not fit the model's context of 64 tokens"):
        conversation.prompt("tell me " * 40)


def _as_from_a_terminal():
    """Ctrl-C as a person's terminal delivers it. A suite started in the background by a
    non-interactive shell (`nohup pytest &`, some CI runners) inherits SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler: the chat would sit at its prompt through every
    Ctrl-C (it did, twice, in fresh-clone runs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(run, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    child = pexpect.spawn(sys.executable, ["-m", "ohlora_cli", "chat", str(run), *args], env=env,
                          encoding="utf-8", timeout=HANG_S, preexec_fn=_as_from_a_terminal)
    child.expect("/exit \\(or Ctrl-D\\) leaves")
    child.expect("> ")
    return child


def ask(child, question: str) -> str:
    """What the session shows between the question and the line after the answer."""
    child.sendline(question)
    child.expect("tokens/s")  # the line after each answer
    shown = child.before
    child.expect("> ")
    return shown


def finished(child) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_interactive_session_through_a_pty(demo_run, trained_answers):
    (q1, _), (q2, _) = demo_rows()[:2]
    child = spawn(demo_run)
    assert trained_answers[q1] in ask(child, q1)
    child.sendline("/reset")
    child.expect("conversation cleared")
    child.expect("> ")
    assert trained_answers[q2] in ask(child, q2)  # after /reset: the first turn's prompt again
    child.sendline("/nonsense")
    child.expect("unknown command /nonsense")
    child.expect("> ")
    child.sendline("/exit")
    assert finished(child) == 0

    child = spawn(demo_run)
    ask(child, q1)
    child.sendeof()  # Ctrl-D at the prompt
    assert finished(child) == 0

    child = spawn(demo_run)
    child.sendintr()  # Ctrl-C at the prompt
    output = child.read()
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in output


def test_a_moved_run_folder_finds_its_tiny_model(demo_run, trained_answers, tmp_path, monkeypatch):
    """A run trained at a place that is gone (its recipe says so), now elsewhere, model inside it."""
    moved = tmp_path / "elsewhere" / "my-run"
    shutil.copytree(demo_run, moved, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    recipe = yaml.safe_load((moved / "recipe.yaml").read_text())
    recipe["output_dir"] = "runs/llm-demo"  # relative, to a working folder that is not this one
    recipe["model"]["path"] = "runs/llm-demo/tiny-model"
    (moved / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    question = demo_rows()[2][0]
    result = chat(moved, "--prompt", question)
    assert result.exit_code == 0, result.output
    assert result.stdout == trained_answers[question] + "\n"


def test_what_cannot_be_loaded_exits_2_naming_it(demo_run, tmp_path):
    recipe = yaml.safe_load((demo_run / "recipe.yaml").read_text())
    no_adapter = tmp_path / "no-adapter"
    no_adapter.mkdir()
    (no_adapter / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    lost_base = tmp_path / "lost-base"
    lost_base.mkdir()
    shutil.copytree(demo_run / "adapter", lost_base / "adapter")
    recipe_lost = {**recipe, "output_dir": str(lost_base), "model": {**recipe["model"], "path": str(tmp_path / "gone")}}
    (lost_base / "recipe.yaml").write_text(yaml.safe_dump(recipe_lost))
    gan = tmp_path / "gan-run"
    gan.mkdir()
    (gan / "recipe.yaml").write_text("kind: gan\n")
    cases = [
        ([tmp_path / "missing"], "missing: no such folder"),
        ([tmp_path], "not an ohlora run folder (no recipe.yaml in it)"),
        ([no_adapter], "no-adapter: no adapter/ (adapter_config.json)"),
        ([lost_base], f"model.path: the base model {tmp_path / 'gone'}: no such folder"),
        ([demo_run, "--weights", "merged"], "no merged/ weights"),
        ([gan], "chat talks to kind 'llm' runs"),
        ([demo_run, "--prompt", "  "], "--prompt: the message is empty"),
    ]
    for args, message in cases:
        result = chat(*args, *([] if "--prompt" in args else ["--prompt", "hi!"]))
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert "--base PATH" in chat(lost_base, "--prompt", "hi!").output
    assert "ohlora generate" in chat(gan, "--prompt", "hi!").output
    fixed = chat(lost_base, "--base", demo_run / "tiny-model", "--prompt", demo_rows()[0][0])  # --base finds it
    assert fixed.exit_code == 0, fixed.output


def test_tensorboard_holds_the_trainer_logs(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((demo_run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert not list((demo_run / "checkpoints").glob("runs"))  # nothing in the Trainer's own default place
    tb = EventAccumulator(str(demo_run / "tb"), size_guidance={"scalars": 0})
    tb.Reload()
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"):
        assert tag in tb.Tags()["scalars"], tb.Tags()
    lines = [json.loads(line) for line in (demo_run / "stats.jsonl").read_text().splitlines()]
    logged = [r for r in lines if "loss" in r]
    loss = tb.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in logged]
    # TensorBoard keeps the logged value as float32: a relative difference <= 6e-8, under rtol 1e-5
    assert np.allclose([e.value for e in loss], [r["loss"] for r in logged])
    assert [e.step for e in tb.Scalars("eval/loss")] == [r["step"] for r in lines if "eval_loss" in r]
