"""The unsloth backend's process: ``python -m ohlora_cli.commands.unsloth_worker RECIPE.yaml [--resume] [--merge] [--verbose]``.

unsloth patches transformers, trl and peft when it is imported, so it must come first, and only in
a process that trains with it. ``ohlora train-llm`` starts this module after its checks and preflight,
with RECIPE.yaml in the run's output_dir. Library output (unsloth's banners included) goes to the
run's train.log from the first line, as in ``ohlora train-llm`` itself (``ohlora_cli.runtime.quiet``
imports only the standard library and rich, nothing unsloth patches).
"""

import sys
from pathlib import Path

from ohlora_cli.runtime import quiet
from ohlora_cli.runtime.run import LOG

if __name__ == "__main__":
    _window = quiet.library_output(verbose="--verbose" in sys.argv[2:])
    _window.__enter__()
    quiet.log_to(Path(sys.argv[1]).parent / LOG, announce=False)  # the parent said where

import unsloth  # noqa: E402, F401, I001  (before transformers / trl / peft: it patches them on import)

import typer  # noqa: E402

from ohlora_cli.commands.guard import guard  # noqa: E402


@guard
def main(recipe_path: str, resume: bool, merge: bool) -> None:
    from ohlora_cli import recipes
    from ohlora_cli.llm.train import check_data, make_plan, train
    from ohlora_cli.runtime import dist

    cfg = recipes.load(recipe_path, expect_kind="llm")
    train_rows, valid_rows, _, _ = check_data(cfg)
    env = dist.dist_env()
    plan = make_plan(cfg, len(train_rows), len(valid_rows), world_size=env.world_size,
                     local_rank=env.local_rank, note=None)
    train(cfg, plan, train_rows, valid_rows, resume=resume, merge=merge)


if __name__ == "__main__":
    argv = sys.argv[1:]
    code = 0
    try:
        main(argv[0], "--resume" in argv, "--merge" in argv)
    except typer.Exit as exc:
        code = exc.exit_code
    finally:
        _window.__exit__(None, None, None)
    sys.exit(code)
