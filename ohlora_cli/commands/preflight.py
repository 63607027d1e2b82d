"""The doctor's preflight before a launch (rank 0, unless ``--skip-doctor``).

The doctor is imported only when the preflight runs (not with ``--skip-doctor``).
"""

from __future__ import annotations


def run_preflight(recipe, *, gpus: int | None, skip: bool, is_main: bool):
    """The report of the environment and recipe checks (raises PreflightFailed on a failure), or None."""
    if skip or not is_main:
        return None
    from ..doctor import preflight

    return preflight(recipe, gpus=gpus)
