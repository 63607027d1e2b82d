"""The unsloth backend's process: ``python -m ohlora_cli.llm.unsloth_worker RECIPE.yaml [--resume] [--merge]``.

unsloth patches transformers, trl and peft when it is imported, so it must come first, and only in
a process that trains with it. ``ohlora train-llm`` starts this module after its checks and preflight.
"""

import unsloth  # noqa: F401, I001  (first: it patches transformers / trl / peft on import)

import sys

import typer

from ohlora_cli.cli import _guard


@_guard
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
    try:
        main(argv[0], "--resume" in argv, "--merge" in argv)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
