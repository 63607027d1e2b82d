"""``ohlora doctor``: preflight checks of the environment, recipes and users' own scripts.

Import-light: nothing here imports torch; the checks import what they need when they run.

- ``run_cli(targets, ...) -> int`` is the command (exit code 0 ok, 1 a failure, or a warning with
  ``--strict``; bad usage raises our BadInputError / RecipeError, which ``cli`` renders as exit 2).
- ``preflight(recipe, gpus=None) -> Report`` is what ``train-gan`` / ``train-llm`` run before they
  load weights: the table goes to stderr and a FAIL raises PreflightFailed; the run writes the
  report to ``output_dir/doctor.json`` once it has its output_dir.

Read-only: neither writes, creates or deletes a file. The probes work on what exists (data a
demo builder has not built yet is reported as pending, not built).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from ..errors import BadInputError, OhloraError, PreflightFailed
from . import env, probes, static
from .registry import Check, Context, Finding, Status
from .report import Report, Section, render

__all__ = ["run_cli", "preflight", "run", "Report", "Finding", "Status", "Context"]


def all_checks() -> list[Check]:
    """The explicit list of checks, in the order the table shows them."""
    return [*env.CHECKS, *probes.CHECKS, *static.CHECKS]


def check_ids() -> list[str]:
    ids: list[str] = []
    for check in all_checks():
        if check.id not in ids:
            ids.append(check.id)
    return ids


def _run_check(check: Check, ctx: Context) -> list[Finding]:
    try:
        findings = check.run(ctx)
    except BadInputError:
        raise  # an unreadable script or recipe is bad usage (exit 2), not a check result
    except OhloraError as exc:
        return [check.finding(Status.FAIL, str(exc), hint=exc.hint)]
    except Exception as exc:  # a check that crashes is a row, never an abort
        return [check.finding(Status.ERROR, f"could not run: {type(exc).__name__}: {exc}",
                              hint="This is a bug in ohlora's doctor; rerun with OHLORA_DEBUG=1 for details.")]
    if not findings:
        return [check.finding(Status.PASS, f"{check.title}: nothing found")]
    return findings


def _recipe_title(recipe) -> str:
    source = getattr(recipe, "source", None)
    return f"recipe {source}" if source else f"recipe ({getattr(recipe, 'kind', '?')})"


def run(*, recipes: list | None = None, scripts: list[Path] | None = None, gpus: int | None = None,
        select: list[str] | None = None, environment: bool | None = None) -> Report:
    """Run the checks that apply to each target. ``environment``: include the environment section
    (default: when a recipe is checked, or nothing else is; a script alone is analysed statically)."""
    from .env import Environment, unsloth_installed, uses_unsloth

    recipes, scripts = recipes or [], scripts or []
    if environment is None:
        environment = bool(recipes) or not scripts
    checks = [c for c in all_checks() if not select or c.id in select]
    by_scope = {scope: [c for c in checks if scope in c.scopes] for scope in ("env", "recipe", "script")}
    needs_env = any(c.uses_env for c in by_scope["env"] if environment) or any(
        c.uses_env for c in by_scope["recipe"] if recipes)
    # unsloth's import probe takes seconds: start it now, beside the environment probe, when its
    # check will need it.
    unsloth = (environment and any(c.id == "unsloth" for c in by_scope["env"])
               and uses_unsloth(recipes, scripts) is not False and unsloth_installed() is not None)
    env = Environment.start(unsloth=unsloth) if needs_env else None
    shared = {"gpus": gpus, "recipes": recipes, "scripts": scripts, "env": env}
    sections: list[tuple[str, Context, list]] = []
    if environment and by_scope["env"]:
        sections.append(("environment", Context("env", **shared), by_scope["env"]))
    for recipe in recipes:
        if by_scope["recipe"]:
            sections.append((_recipe_title(recipe), Context("recipe", recipe=recipe, **shared), by_scope["recipe"]))
    for script in scripts:
        if by_scope["script"]:
            sections.append((f"script {script}", Context("script", script=script, **shared), by_scope["script"]))
    # Checks that do not read the environment probe run first, while its subprocess is still
    # importing torch; the report keeps the registry's order.
    jobs = [(i, check, ctx) for i, (_, ctx, section_checks) in enumerate(sections) for check in section_checks]
    results = {}
    try:
        for i, check, ctx in sorted(jobs, key=lambda job: job[1].uses_env):
            results[i, check.id] = _run_check(check, ctx)
    finally:
        if env is not None:
            env.close()
    report = Report()
    for i, (title, ctx, section_checks) in enumerate(sections):
        report.sections.append(Section(title, [f for c in section_checks for f in results[i, c.id]],
                                       recipe=ctx.recipe))
    return report


def existing_run(recipe) -> str | None:
    """The checkpoint of an earlier run in the recipe's output_dir (a launch without --resume is
    refused then), by name; None when there is none. Reads only."""
    out_dir = Path(recipe.output_dir).expanduser()
    if recipe.kind == "gan":
        if recipe.train.method == "scorer":
            from ..gan.scorer import state_path

            found = state_path(out_dir) if state_path(out_dir).is_file() else None
        else:
            from ..gan.checkpoint import latest_checkpoint

            found = latest_checkpoint(out_dir)
    else:
        from ..llm.train import latest_checkpoint

        found = latest_checkpoint(out_dir / "checkpoints")
    return found.name if found is not None else None


def judge_launches(report: Report) -> None:
    """Say, under each recipe, whether ``ohlora train-*`` would start it now: not with a failure in
    its area or the environment's, and not over an earlier run without --resume."""
    env_failed = any(f.status in (Status.FAIL, Status.ERROR) for s in report.sections if s.recipe is None
                     and s.title == "environment" for f in s.findings)
    for section in report.sections:
        if section.recipe is None:
            continue
        failed = sum(f.status in (Status.FAIL, Status.ERROR) for f in section.findings)
        command = f"ohlora train-{section.recipe.kind}"
        if failed or env_failed:
            section.starts = False
            section.launch = (f"would not start: {failed} failure{'s' if failed != 1 else ''} above"
                              if failed else "would not start: the environment failed above")
            continue
        found = existing_run(section.recipe)
        if found is not None:
            section.starts = False
            section.launch = (f"would need --resume: output_dir {section.recipe.output_dir} already holds a run "
                              f"({found}); {command} ... --resume continues it, or set output_dir to a new folder")
        else:
            warned = sum(f.status is Status.WARN for f in section.findings)
            section.starts = True
            section.launch = "would start" + (f" (with {warned} warning{'s' if warned != 1 else ''})" if warned else "")


def _print_json(obj) -> None:
    """One JSON object on stdout (the terminal's: library output is kept off it, see runtime.quiet)."""
    from ..console import out

    out.file.write(json.dumps(obj) + "\n")
    out.file.flush()


def _list_checks(json_out: bool) -> int:
    rows = {}
    for check in all_checks():
        entry = rows.setdefault(check.id, {"id": check.id, "title": check.title, "scopes": []})
        entry["scopes"] += [s for s in check.scopes if s not in entry["scopes"]]
    if json_out:
        _print_json({"checks": list(rows.values())})
        return 0
    from rich.table import Table

    from ..console import out

    table = Table(title="doctor checks", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("applies to", no_wrap=True)
    table.add_column("what it checks")
    for row in rows.values():
        table.add_row(row["id"], ", ".join(row["scopes"]), row["title"])
    out.print(table)
    return 0


def _split_targets(targets: list[str], overrides: list[str]) -> tuple[list, list[Path]]:
    recipes, scripts = [], []
    for target in targets:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise BadInputError(f"{target}: no such script", hint="Pass the path of a Python file.")
            scripts.append(path)
        else:
            from .. import recipes as recipe_io  # pydantic + yaml: only when a recipe is given

            recipe = recipe_io.load(target, overrides)
            check_writes(recipe)
            recipes.append(recipe)
    if overrides and not recipes:
        raise BadInputError("--set overrides recipe keys, but no recipe was given",
                            hint="Pass a recipe (a .yaml file or a packaged recipe name) with --set.")
    return recipes, scripts


def check_writes(recipe) -> None:
    """What a run of ``recipe`` would write, checked as its dry run checks it (reads only): its
    output_dir must be a new folder or an ohlora run's, and a demo builder (data.synthetic,
    model.tiny) must be free to build where it would. A RecipeError (exit 2) names the key, the
    folder and what is in it: a mistyped data.csv or model.path in a copied demo recipe is bad
    input, not a finding."""
    from ..runtime.run import RunFolder

    RunFolder(recipe.output_dir).check()
    if recipe.kind == "gan":
        from ..gan.synthetic import pending_build
    else:
        from ..llm.tiny import pending_build
    pending_build(recipe.data if recipe.kind == "gan" else recipe)


def run_cli(targets: list[str], *, json_out: bool = False, strict: bool = False, gpus: int | None = None,
            list_checks: bool = False, select: list[str] | None = None, overrides: list[str] | None = None,
            verbose: bool = False, observe: bool = False, steps: int = 6, timeout: float = 120.0) -> int:
    """The ``ohlora doctor`` command; returns its exit code. ``observe``: ``--run`` (the first
    target is the script, the rest its arguments)."""
    if list_checks:
        return _list_checks(json_out)
    select = select or []
    known = check_ids()
    for check_id in select:
        if check_id not in known:
            close = difflib.get_close_matches(check_id, known, n=1)
            raise BadInputError(f"--select {check_id}: no such check",
                                hint=(f"did you mean '{close[0]}'? " if close else "") + f"Known: {', '.join(known)}.")
    if observe:
        return _run_observed(targets, json_out=json_out, strict=strict, gpus=gpus, select=select,
                             steps=steps, timeout=timeout, verbose=verbose)
    recipes, scripts = _split_targets(targets, overrides or [])
    report = run(recipes=recipes, scripts=scripts, gpus=gpus, select=select)
    judge_launches(report)
    if json_out:
        _print_json(report.to_dict())
    else:
        from ..console import out

        render(report, out, verbose=verbose)
    return report.exit_code(strict=strict)


def _run_observed(targets: list[str], *, json_out: bool, strict: bool, gpus: int | None, select: list[str],
                  steps: int, timeout: float, verbose: bool) -> int:
    """``ohlora doctor SCRIPT.py --run [-- ARGS]``: the static analysis, then the script run for
    its first ``steps`` optimizer steps under instruments; one report."""
    from ..console import err, out
    from . import observed as observed_run

    if not targets or not targets[0].endswith(".py"):
        raise BadInputError("--run needs a Python script first: ohlora doctor SCRIPT.py --run [-- ARGS...]",
                            hint="Pass the training script; its own arguments go after `--`.")
    script, args = Path(targets[0]), targets[1:]
    if not script.is_file():
        raise BadInputError(f"{script}: no such script", hint="Pass the path of a Python file.")
    command = " ".join([str(script), *args])
    (err if json_out else out).print(
        f"doctor --run: executing `python {command}` in a child process (its first {steps} optimizer steps, "
        f"at most {timeout:g} s); its writes go to a sandbox folder, the project's files are not changed.",
        highlight=False, markup=False)
    report = run(scripts=[script], gpus=gpus, select=select)
    static = [f for section in report.sections for f in section.findings]
    observed = observed_run.observe(script, args, steps=steps, timeout=timeout, gpus=gpus,
                                    sites=observed_run.static_sites(static))
    single = None
    if gpus and gpus > 1:  # the same script with 1 GPU, for its examples per optimizer step
        single = observed_run.observe(script, args, steps=1, timeout=timeout, gpus=1)
    found = observed_run.section_findings(observed, single)
    if select:
        found = [f for f in found if f.check in select or f.check.startswith("observed-")]
    unreached, demoted = [], []
    for section in report.sections:
        section.findings = observed_run.merge_static(section.findings, found)
        unreached += observed_run.unreached(section.findings, observed)
        demoted += observed_run.demote(section.findings, observed, found)
    report.sections.append(Section(f"run {script} (observed)", found))
    summary = observed_run.writes_summary(observed)
    if json_out:
        data = report.to_dict()
        data["run"] = {"sandbox": str(observed.sandbox), "steps": observed.steps, "timed_out": observed.timed_out,
                       "wall_s": round(observed.wall_s, 1), "read_only_view": observed.view,
                       "unreached": unreached, "demoted": demoted}
        _print_json(data)
        err.print(summary, highlight=False, markup=False)
    else:
        render(report, out, verbose=verbose)
        out.print(summary, highlight=False, markup=False)
    return report.exit_code(strict=strict)


def preflight(recipe_model, *, gpus: int | None = None) -> Report:
    """Environment + recipe checks before a launch: table on stderr, PreflightFailed on a FAIL
    (``bad_input`` when any failing finding is bad input). Writes nothing: the run saves the
    returned report as ``output_dir/doctor.json`` when it goes ahead."""
    from ..console import err
    from ..runtime import quiet

    report = run(recipes=[recipe_model], gpus=gpus)
    render(report, err, verbose=quiet.verbose())
    failures = report.failures()
    if failures:
        first = failures[0]
        where = f" ({first.where})" if first.where else ""
        raise PreflightFailed(
            f"the doctor's preflight found {len(failures)} failure(s); first: {first.check}{where}: {first.message}",
            bad_input=any(f.bad_input for f in failures),
            hint=first.hint or "See the findings above; fix the failures, or pass --skip-doctor to launch anyway.",
        )
    return report
