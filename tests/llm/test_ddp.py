"""--nproc 2 on the CPU: torchrun (gloo) with a global batch equal to train.batch_size."""

import json
import os
import subprocess
import sys

from bounds import HANG_S
from llm_helpers import write_recipe


def test_two_process_run_keeps_the_global_batch(tmp_path):
    recipe = write_recipe(tmp_path, batch_size=8, epochs=2)
    cmd = [sys.executable, "-m", "ohlora_cli", "train-llm", str(recipe), "--nproc", "2", "--skip-doctor"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "run"
    plan = json.loads((run / "run.json").read_text())
    assert plan["world_size"] == 2 and plan["launcher"] == "torchrun"
    assert plan["per_device_batch"] == 4 and plan["gradient_accumulation"] == 1
    assert plan["global_batch"] == 8
    # 10 rows split over 2 ranks -> 5 each -> 2 batches of 4 per rank per epoch: 2 optimizer steps
    # per epoch. (Each rank reading all 10 rows, or a batch multiplied per GPU, would differ.)
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps[-1] == 4
    # the parent's plan only, on stderr (stdout is kept for what a command is asked for)
    assert result.stderr.count("8 = 4 per device x 1 accumulation x 2 processes") == 1
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
