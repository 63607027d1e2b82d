"""Cost of ``ohlora doctor SCRIPT.py --run``'s instruments: steps/s with and without them.

Usage: python bench/doctor_run.py [--steps 200] [--repeat 3]
Three workloads (a small MLP, a conv GAN step: D then G, a tiny transformer LM step), each
variant in its own process, interleaved, best of ``--repeat``, one intra-op thread (with two,
OpenMP workers wait on cores other jobs hold). "observed" = every always-on instrument of the
child (torch-function mode, ``Module.__call__`` wrapper, saved-tensor ledger, CUDA query
wrappers, and the line counter of the static findings' sites with one site in each step function,
the lines marked ``# SITE``, as a finding in a training loop would be); "census" = the fixed cost
of one step-boundary census with the workload's objects alive (median of 5). Then end to end: the
wall time of ``ohlora doctor small.py --run`` on a small MLP script against the time
``python -c "import torch"`` takes, best of ``--repeat``. Prints a table and one JSON line.
Targets: observed at most 2x per step; a ``--run`` of a small script within import time + 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("mlp", "gan", "lm")


def build(name: str):
    """A step function for ``name`` (models and data built here, tiny, on the CPU)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = torch.randn(32, 64), torch.randn(32, 64)

        def step():
            loss = (model(x) - y).pow(2).mean()  # SITE
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step
    if name == "gan":
        G = nn.Sequential(nn.ConvTranspose2d(32, 64, 4, 1, 0), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Tanh())
        D = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1),
                          nn.LeakyReLU(0.2), nn.Conv2d(64, 1, 4, 1, 0))
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
        real = torch.randn(16, 3, 16, 16)

        def step():
            z = torch.randn(16, 32, 1, 1)
            fake = G(z)
            loss_d = nn.functional.softplus(D(fake.detach())).mean() + nn.functional.softplus(-D(real)).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = nn.functional.softplus(-D(fake)).mean()  # SITE
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()

        return step
    vocab, width = 1000, 128
    embed = nn.Embedding(vocab, width)
    layer = nn.TransformerEncoderLayer(width, 4, 256, batch_first=True, dropout=0.0)
    body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    head = nn.Linear(width, vocab)
    params = [*embed.parameters(), *body.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    tokens = torch.randint(0, vocab, (8, 33))
    mask = nn.Transformer.generate_square_subsequent_mask(32)

    def step():
        logits = head(body(embed(tokens[:, :-1]), mask=mask, is_causal=True))
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))  # SITE
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def worker(model: str, variant: str, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    step = build(model)
    graphs = None
    if variant == "observed":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from ohlora_cli.doctor.observed.devices import Cuda
        from ohlora_cli.doctor.observed.frames import UserFiles
        from ohlora_cli.doctor.observed.graphs import Graphs
        from ohlora_cli.doctor.observed.tensors import Observer

        def emit(kind, **data):
            return None

        user = UserFiles([os.path.dirname(os.path.abspath(__file__))], os.getcwd())
        cuda = Cuda(emit, user, shim=False)
        cuda.install()
        graphs = Graphs(emit, user)
        graphs.install()
        observer = Observer(emit, user, graphs, cuda)
        observer.skip_optimizer_steps()
        observer.__enter__()
        from ohlora_cli.doctor.observed.coverage import Lines

        with open(__file__, encoding="utf-8") as f:
            marked = [n for n, line in enumerate(f, 1) if line.rstrip().endswith("# " + "SITE")]
        lines = Lines([f"{__file__}:{n}" for n in marked], emit)
        lines.install()
    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - start) * 1000 / steps
    out = {"ms_per_step": ms}
    if graphs is not None:
        times = []
        for k in range(5):
            start = time.perf_counter()
            graphs.census(k + 1)
            lines.flush(k + 1)
            times.append((time.perf_counter() - start) * 1000)
        out["census_ms"] = statistics.median(times)
    return out


SMALL_SCRIPT = """\
import torch
from torch import nn

model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(64, 16), torch.randn(64, 1)
for step in range(10_000):
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def _best_wall(command: list[str], cwd: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def end_to_end(repeat: int) -> dict:
    """Seconds for ``import torch`` alone and for a whole ``ohlora doctor small.py --run``."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "small.py").write_text(SMALL_SCRIPT)
        import_s = _best_wall([sys.executable, "-c", "import torch"], folder, repeat)
        run_s = _best_wall([sys.executable, "-m", "ohlora_cli", "doctor", "small.py", "--run"], folder, repeat)
    return {"import_torch_s": round(import_s, 2), "doctor_run_s": round(run_s, 2), "over_import_s": round(run_s - import_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    best: dict = {}
    for _ in range(args.repeat):
        for model in MODELS:
            for variant in ("bare", "observed"):
                done = subprocess.run([sys.executable, __file__, "--worker", model, variant, "--steps", str(args.steps)],
                                      capture_output=True, text=True, check=True, env=env)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                key = (model, variant)
                if key not in best or result["ms_per_step"] < best[key]["ms_per_step"]:
                    best[key] = result
    rows = {}
    print(f"{'workload':<10}{'bare ms/step':>14}{'observed ms/step':>18}{'ratio':>8}{'census ms':>11}")
    for model in MODELS:
        bare, observed = best[model, "bare"]["ms_per_step"], best[model, "observed"]["ms_per_step"]
        census = best[model, "observed"].get("census_ms", 0.0)
        rows[model] = {"bare_ms": round(bare, 2), "observed_ms": round(observed, 2),
                       "ratio": round(observed / bare, 2), "census_ms": round(census, 1)}
        print(f"{model:<10}{bare:>14.2f}{observed:>18.2f}{observed / bare:>7.2f}x{census:>11.1f}")
    whole = end_to_end(args.repeat)
    print(f"\nimport torch {whole['import_torch_s']:.2f} s; ohlora doctor small.py --run {whole['doctor_run_s']:.2f} s "
          f"({whole['over_import_s']:+.2f} s over the import; target +10 s)")
    print(json.dumps({"bench": "doctor_run", "steps": args.steps, "repeat": args.repeat, "workloads": rows,
                      "end_to_end": whole}))


if __name__ == "__main__":
    main()
