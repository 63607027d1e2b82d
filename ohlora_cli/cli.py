"""The ``ohlora`` command line. Imports typer, rich and the standard library only: engines
(torch, transformers, trl, unsloth) are imported inside the command bodies so ``--help`` stays
instant. Our exceptions are mapped to messages and exit codes in one place,
``ohlora_cli.commands.guard``.
"""

from __future__ import annotations

import atexit
import gc
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import __version__
from .commands.guard import guard


def _examples(*lines: str) -> str:
    """An epilog of example commands, kept unwrapped by click's \\b marker."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


class _Commands(TyperGroup):
    """The top-level command group: an unknown command gets the closest one (``ohlora gen`` ->
    ``generate``) and the list, as a usage error (exit 2)."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            names = self.list_commands(ctx)
            close = [n for n in names if n.startswith(name)] or difflib.get_close_matches(name, names, n=1)
            guess = f" Did you mean '{close[0]}'?" if len(close) == 1 else (
                f" Did you mean one of: {', '.join(close)}?" if close else "")
            typer.echo(f"{ctx.get_usage()}\nTry 'ohlora --help' for help.\n\nerror: no such command '{name}'.{guess} "
                       f"Commands: {', '.join(names)}.", err=True)
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_Commands,
    name="ohlora",
    help=(
        "Fine-tune a label-conditioned StyleGAN and a small LLM, and catch the classic "
        "fine-tuning failures (float64 labels into float32 weights, gradient-enabled "
        "inference that grows memory, a batch silently multiplied by the visible GPUs) "
        "before a job launches."
    ),
    epilog=_examples(
        "ohlora train-gan                      # the embedded demo, under a minute on a CPU",
        "ohlora recipes                        # the packaged recipes; ohlora recipes copy NAME to own one",
        "ohlora train-llm llm-demo --dry-run   # resolve and check a recipe, then stop",
        "ohlora doctor train.py --gpus 2       # analyse your own training script",
    ),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options shared by the train commands.
RecipeArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[RECIPE] [KEY=VALUE]...",
        help="Recipe: a YAML file or the name of a packaged recipe (ohlora recipes lists them). Default: the "
        "command's demo recipe. KEY=VALUE arguments override recipe keys, as --set does.",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe key, KEY=VALUE (value parsed as YAML). Repeatable.",
                 metavar="KEY=VALUE"),
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Validate the recipe and data, run the preflight, print the plan, stop."),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in output_dir.")]
SkipDoctorOpt = Annotated[bool, typer.Option("--skip-doctor", help="Do not run the doctor's preflight.")]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Also show the libraries' own output (progress bars, warnings) live; "
                 "a run always keeps it in output_dir/train.log."),
]
NprocOpt = Annotated[
    int | None,
    typer.Option("--nproc", min=1, help="Launch N processes with torchrun (DDP); batch_size stays global."),
]


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Backend(str, Enum):
    hf = "hf"
    unsloth = "unsloth"


class Weights(str, Enum):
    auto = "auto"
    adapter = "adapter"
    merged = "merged"


DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run: auto = a CUDA GPU when visible, else the CPU.")]
QuietVerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also show the libraries' own output (warnings, banners) live.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ohlora {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ohlora: label-conditioned StyleGAN and LLM LoRA fine-tuning, with a preflight doctor."""


@app.command(
    "train-gan",
    epilog=_examples(
        "ohlora train-gan                                   # demo: synthetic blobs, 16 px, ~40 s on CPU",
        "ohlora train-gan gan-demo train.kimg=4 output_dir=runs/short   # KEY=VALUE overrides, as --set",
        "ohlora train-gan gan-ohlora-v1 --set data.csv=scores.csv --set model.checkpoint=stylegan.pth",
        "ohlora train-gan my.yaml --resume                  # continue from output_dir's latest checkpoint",
        "ohlora train-gan my.yaml --nproc 2                 # DDP under torchrun",
    ),
)
@guard
def train_gan(
    recipe: RecipeArg = None,
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    resume: ResumeOpt = False,
    skip_doctor: SkipDoctorOpt = False,
    nproc: NprocOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune a StyleGAN conditioned on continuous property scores."""
    from .runtime.quiet import library_output

    with library_output(verbose=verbose):
        from .commands.recipe import arguments
        from .commands.train_gan import run

        name, overrides = arguments(recipe, set_, command="train-gan", default="gan-demo")
        run(name, overrides, dry_run=dry_run, resume=resume, skip_doctor=skip_doctor, nproc=nproc)


@app.command(
    "train-llm",
    epilog=_examples(
        "ohlora train-llm                                   # demo: a tiny local model, under a minute on CPU",
        "ohlora train-llm llm-demo train.epochs=2 output_dir=runs/try   # KEY=VALUE overrides, as --set",
        "ohlora train-llm llm-polyglot-lora --set model.path=./polyglot-ko-1.3b",
        "ohlora train-llm my.yaml --set model.backend=unsloth --merge",
        "ohlora train-llm my.yaml --nproc 2                 # DDP under torchrun, never DataParallel",
    ),
)
@guard
def train_llm(
    recipe: RecipeArg = None,
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    resume: ResumeOpt = False,
    skip_doctor: SkipDoctorOpt = False,
    nproc: NprocOpt = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also save the LoRA-merged full weights.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """SFT + LoRA fine-tuning with trl; backend hf or unsloth (model.backend)."""
    from .runtime.quiet import library_output

    with library_output(verbose=verbose):
        from .commands.recipe import arguments
        from .commands.train_llm import run

        name, overrides = arguments(recipe, set_, command="train-llm", default="llm-demo")
        run(
            name, overrides, dry_run=dry_run, resume=resume, skip_doctor=skip_doctor,
            nproc=nproc, merge=merge,
        )


@app.command(
    "generate",
    epilog=_examples(
        "ohlora generate runs/gan-demo -o samples.png                 # 16 images, every label at 0",
        "ohlora generate runs/gan-demo --labels brightness=1.5,position=-1 -n 8 -o bright.png",
        "ohlora generate runs/gan-demo --sweep position --from -2 --to 2 --steps 7 -o sweep.png",
        "ohlora generate runs/gan-demo --out-dir samples --scorer runs/gan-scorer-demo   # PNGs + images.csv",
        "ohlora generate runs/gan-demo --seeds 0-35,40 --out-dir picked   # seed0000.png ... seed0040.png",
        "ohlora generate runs/gan-demo -o samples.png --force         # replace samples.png",
        "ohlora generate stylegan_celeba_partial256.pth -n 4 --truncation 0.7 -o celeba.png",
    ),
)
@guard
def generate(
    source: Annotated[
        str,
        typer.Argument(metavar="SOURCE", help="A GAN run folder (its latest checkpoint), one of our checkpoint-*.safetensors, or a "
                       "GenForce StyleGAN .pth.", show_default=False),
    ],
    labels: Annotated[
        str | None,
        typer.Option("--labels", "-l", metavar="NAME=VALUE,...",
                     help="Label values in the model's label units: z-scores when the run standardised its labels "
                     "(data.standardize_labels: 0 = the data's mean, 1 = one standard deviation; at most 4 either "
                     "way), else the CSV's raw values. Labels not given are 0."),
    ] = None,
    n: Annotated[
        int | None,
        typer.Option("-n", "--num", min=1, show_default=False,
                     help="Images to draw (default 16); with --sweep, rows of one z each (default 4)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first z: image (or sweep row) i uses seed + i.")] = 0,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", metavar="LIST", show_default=False,
                     help="One image (with --sweep: one row) per seed, as NVlabs' gen_images.py: 0-35,40 (ranges "
                     "inclusive). Instead of --seed and -n."),
    ] = None,
    truncation: Annotated[
        float,
        typer.Option("--truncation", min=0.0, metavar="PSI",
                     help="Truncation psi: pull w toward the average w (1 = off; 0.7 is common). It pulls the "
                     "labels' effect toward the average too."),
    ] = 1.0,
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", metavar="LABEL", help="Sweep this label across the columns, the others as --labels."),
    ] = None,
    start: Annotated[
        float | None,
        typer.Option("--from", show_default=False,
                     help="First value of the sweep, in label units (default: 2 sd below the data's mean; -2 for "
                     "z-scores)."),
    ] = None,
    stop: Annotated[
        float | None,
        typer.Option("--to", show_default=False,
                     help="Last value of the sweep, in label units (default: 2 sd above the data's mean; +2 for "
                     "z-scores)."),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=2, help="Columns of the sweep.")] = 7,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write one PNG grid to this new file (an existing one only with --force).",
                     show_default=False)
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", show_default=False,
                     help="Write one PNG per image, named by its seed (seed0003.png), and images.csv (z seed, "
                     "labels, measured scores) into this new or empty folder."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the file named by -o when it exists (nothing else is ever "
                           "replaced).")
    ] = False,
    scorer: Annotated[
        str | None,
        typer.Option("--scorer", metavar="RUN", show_default=False,
                     help="A property-score CNN (a train.method: scorer run folder or its scorer.safetensors): "
                     "measure every image and show the scores beside the requested labels."),
    ] = None,
    device: DeviceOpt = Device.auto,
    verbose: QuietVerboseOpt = False,
) -> None:
    """Draw images from a trained generator with chosen labels: a grid, a label sweep, or one PNG each."""
    from .runtime.quiet import library_output

    with library_output(verbose=verbose):
        from .commands.generate import run

        run(source, labels=labels, n=n, seed=seed, truncation=truncation, sweep=sweep, start=start, stop=stop,
            steps=steps, output=output, out_dir=out_dir, scorer=scorer, device=device.value, seeds=seeds,
            force=force)


@app.command(
    "chat",
    epilog=_examples(
        "ohlora chat runs/llm-demo                              # talk to the demo run; /reset, /exit, Ctrl-D",
        "ohlora chat runs/llm-demo --prompt \"what is your name?\"   # one answer on stdout",
        "ohlora chat runs/my-lora --temperature 0.7 --top-p 0.9 --seed 1",
        "ohlora chat runs/my-lora --base ./polyglot-ko-1.3b       # the base model is somewhere else now",
    ),
)
@guard
def chat(
    run: Annotated[
        str,
        typer.Argument(metavar="RUN", show_default=False,
                       help="A train-llm run folder (its output_dir: recipe.yaml, adapter/, maybe merged/)."),
    ],
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", "-p", metavar="TEXT", show_default=False,
                     help="Answer this one message and print the answer alone on stdout (no interactive session)."),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", min=1, show_default=False,
                     help="Longest answer in tokens (default: the run's generate.max_new_tokens)."),
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", min=0.0, help="0 = greedy (the same answer every time); > 0 samples.")
    ] = 0.0,
    top_p: Annotated[
        float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling when --temperature > 0.")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling.")] = 0,
    backend: Annotated[
        Backend | None,
        typer.Option("--backend", show_default=False,
                     help="hf (transformers + peft) or unsloth (default: the run's model.backend)."),
    ] = None,
    weights: Annotated[
        Weights,
        typer.Option("--weights", help="adapter: the base model + adapter/; merged: merged/ alone (from train-llm "
                     "--merge); auto: merged/ when the run has it."),
    ] = Weights.auto,
    base: Annotated[
        str | None,
        typer.Option("--base", metavar="PATH", show_default=False,
                     help="The base model for the adapter, instead of the recipe's model.path (a folder or hub id)."),
    ] = None,
    device: DeviceOpt = Device.auto,
    verbose: QuietVerboseOpt = False,
) -> None:
    """Talk to a trained LLM run: interactive, or one answer with --prompt."""
    from .runtime.quiet import library_output

    with library_output(verbose=verbose):
        from .commands.chat import run as chat_run

        chat_run(run, prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                 backend=backend.value if backend else None, weights=weights.value, base=base, device=device.value)


recipes_app = typer.Typer(
    name="recipes",
    help="List the packaged recipes (name, kind, one line each); 'copy NAME [DEST]' writes one you own.",
    epilog=_examples(
        "ohlora recipes                          # names, kinds, one line each",
        "ohlora recipes copy gan-demo my.yaml    # a commented copy to edit (never over an existing file)",
        "ohlora train-gan my.yaml",
    ),
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(recipes_app)


@recipes_app.callback(invoke_without_command=True)
@guard
def recipes_list(ctx: typer.Context) -> None:
    """List the packaged recipes; 'copy NAME [DEST]' writes one you own."""
    if ctx.invoked_subcommand is None:
        from .commands.catalog import list_recipes

        list_recipes()


@recipes_app.command(
    "copy",
    epilog=_examples(
        "ohlora recipes copy llm-demo            # ./llm-demo.yaml",
        "ohlora recipes copy gan-ohlora-v1 configs/   # configs/gan-ohlora-v1.yaml",
    ),
)
@guard
def recipes_copy(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A packaged recipe (ohlora recipes lists them).",
                                        show_default=False)],
    dest: Annotated[
        Path | None,
        typer.Argument(metavar="[DEST]", help="A new .yaml file, or a folder (default: ./NAME.yaml). Never written "
                       "over when it exists.", show_default=False),
    ] = None,
) -> None:
    """Copy a packaged recipe, comments included, to a new file you own."""
    from .commands.catalog import copy

    copy(name, dest)


@app.command(
    "report",
    epilog=_examples(
        "ohlora report runs/gan-demo                        # (re)build runs/gan-demo/report.html",
        "ohlora report runs/a runs/b -o compare.html        # two runs side by side",
    ),
)
@guard
def report(
    runs: Annotated[
        list[str], typer.Argument(metavar="RUN...", show_default=False, help="Run folders (their output_dir).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", show_default=False,
                     help="Where to write the page (default: RUN/report.html for one run; needed for several)."),
    ] = None,
) -> None:
    """Build a run's report.html (recipe, preflight, curves, grids or answers), or compare runs."""
    from .commands.report import run as report_run

    report_run(runs, output)


@app.command(
    "doctor",
    epilog=_examples(
        "ohlora doctor                          # the environment only",
        "ohlora doctor recipes/gan-demo.yaml    # environment, recipe, data and dry-run probes",
        "ohlora doctor train.py --gpus 2        # static analysis of your own script",
        "ohlora doctor train.py --json --select dtype-mismatch",
        "ohlora doctor train.py --run -- --lr 0.1   # EXECUTES train.py for 6 optimizer steps, observed",
    ),
)
@guard
def doctor(
    targets: Annotated[
        list[str] | None,
        typer.Argument(metavar="[TARGET]... [KEY=VALUE]...",
                       help="Recipes (.yaml or packaged names) and/or Python scripts to check; KEY=VALUE arguments "
                       "override recipe keys, as --set does.", show_default=False),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too.")] = False,
    gpus: Annotated[int | None, typer.Option("--gpus", min=0, help="Plan for N visible GPUs (with --run: what the script's own torch.cuda.device_count() calls return, compared with a 1-GPU run).")] = None,
    list_checks: Annotated[bool, typer.Option("--list-checks", help="List the checks and exit.")] = False,
    select: Annotated[
        list[str] | None, typer.Option("--select", help="Run only this check id. Repeatable.", metavar="ID")
    ] = None,
    set_: SetOpt = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Every check's row, passes included (by default: one line per "
                           "area and every finding that is not a pass), and the libraries' own output live.")
    ] = False,
    observe: Annotated[
        bool,
        typer.Option("--run", help="EXECUTE the script (the first target; the rest, after `--`, are its arguments) "
                     "in a child process for its first --steps optimizer steps, and report what was observed. "
                     "Its writes go to a sandbox folder; other changes to files are blocked."),
    ] = False,
    steps: Annotated[int, typer.Option("--steps", min=1, help="With --run: stop after N optimizer steps.")] = 6,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="With --run: stop the script after S seconds (wall clock).")
    ] = 120.0,
) -> None:
    """Preflight: environment, recipes (settings, data, dry-run probes) and your own scripts
    (statically, or with --run by executing them for a few steps)."""
    from .runtime.quiet import library_output

    with library_output(verbose=verbose):
        from .doctor import run_cli
        from .recipes import split_arguments

        # with --run, what follows the script is its own arguments (key=value included), never overrides
        targets, bare = (targets or [], []) if observe else split_arguments(targets or [], command="doctor", many=True)
        code = run_cli(
            targets, json_out=json_out, strict=strict, gpus=gpus, list_checks=list_checks,
            select=select or [], overrides=[*(set_ or []), *bare], verbose=verbose, observe=observe, steps=steps,
            timeout=timeout,
        )
    if code:
        raise typer.Exit(code)


def main() -> None:
    # Registered first, so it runs last: once torch (and the libraries around it) are loaded,
    # the interpreter's final garbage collections walk millions of objects for about a second
    # before the process ends. Freezing them skips that walk; module teardown and our own
    # cleanup still run, and every file we write is closed before this point.
    atexit.register(gc.freeze)
    app()


if __name__ == "__main__":
    main()
