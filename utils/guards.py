"""``make guards``: does every notebook that claims a trained result fail a check when its
training is cut to 2% of its steps? (DESIGN.md §4)

    python -m utils.guards [--fraction 0.02] [--timeout SECONDS] [--root REPO] [NOTEBOOK ...]

Each notebook runs in the ``tiny`` profile in a fresh kernel with ``DGM_FIT_FRACTION`` set, so
every guarded :func:`utils.training.fit` runs ``ceil(fraction · steps)`` steps
(:func:`utils.training.planned_steps`). A notebook then ends in one of three ways:

- ``guarded``: a ``utils.check`` failed, naming its label: the checks see the missing training.
- ``CRASHED``: some other error (a plotting cell, a shape): the notebook breaks instead of
  saying which result is gone. Its checks must come before the code that needs a trained model.
- ``STILL PASSES``: every check held with 2% of the training, so none of them checks it.

A notebook that derives and checks results but claims no trained result is listed in
``NO_TRAINED_RESULT`` with the reason; it may pass. The command prints one row per notebook and
exits 1 if any other notebook still passes or crashed. It is not part of ``make test``: it
re-runs the whole book (a few minutes in ``tiny``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from tqdm import tqdm

from utils.book import PARTS, REPO_ROOT, _execute, _reading_key, find_notebooks
from utils.training import FIT_FRACTION_ENV

__all__ = ["NO_TRAINED_RESULT", "Guard", "classify", "format_report", "main", "run_guards"]

# Notebooks whose checks are derivations, closed forms and Monte Carlo, with no trained model
# among their claims (what they fit is a closed form, or optimisation is itself the subject and
# is run by hand, not by fit). Each with its reason, shown in the report.
NO_TRAINED_RESULT: dict[str, str] = {
    "foundations/03_jensen_and_variational_bounds.ipynb": "bounds and closed forms, no training",
    "foundations/04_law_of_large_numbers.ipynb": "Monte Carlo and importance sampling, no model",
    "foundations/05_manifold_hypothesis.ipynb": "dimension estimators and closed-form MLEs, "
                                                "no gradient training",
    "divergences/03_optimal_transport.ipynb": "exact and entropic OT solvers, no training",
    "gans/02_gd_dynamics.ipynb": "gradient dynamics of bilinear games, iterated by hand",
    "diffusion/01_forward_process.ipynb": "the forward process in closed form, no training",
    "ssm/01_continuous_and_discrete.ipynb": "discretisations checked against scipy and the exact "
                                            "solution, orders measured, no training",
    "ssm/02_recurrence_vs_convolution.ipynb": "recurrence = convolution checked, costs timed, "
                                              "no training",
}

# "check failed: <label>" or "check failed: <label> (<detail>)"; labels may hold parentheses, so
# the whole message is reported
_CHECK_FAILED = re.compile(r"check failed: (.+)$", re.MULTILINE)


@dataclass
class Guard:
    """One notebook run with its training cut: ``status`` is ``guarded``, ``CRASHED``,
    ``STILL PASSES`` or ``passes (no trained result)``; ``detail`` the failed check's message
    (its label, then its detail in brackets), the crash, or the reason from
    ``NO_TRAINED_RESULT``."""

    path: Path
    seconds: float
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("guarded", "passes (no trained result)")


def classify(rel: str, error: str | None) -> tuple[str, str]:
    """The (status, detail) of notebook ``rel`` (``part/NN_slug.ipynb``) from its run's error
    description (``None``: it ran through)."""
    if error is None:
        if rel in NO_TRAINED_RESULT:
            return "passes (no trained result)", NO_TRAINED_RESULT[rel]
        return "STILL PASSES", "no check failed with the training cut"
    labels = _CHECK_FAILED.findall(error)  # the last one is the message (earlier: source lines)
    if "AssertionError" in error and labels and "{label}" not in labels[-1]:
        return "guarded", labels[-1].strip()[:240]
    return "CRASHED", " ".join(error.split())[:300]


def run_guards(notebooks: list[Path], fraction: float = 0.02, timeout: int = 600,
               root: Path = REPO_ROOT) -> list[Guard]:
    """Run each notebook in ``tiny`` with ``fit`` cut to ``fraction`` of its steps."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    out = []
    bar = tqdm(sorted(notebooks, key=_reading_key), unit="notebook")
    for src in bar:
        rel = f"{src.parent.name}/{src.name}"
        bar.set_description(rel)
        start = time.perf_counter()
        nb = nbformat.read(src, as_version=4)
        error = _execute(nb, src.parent, "tiny", timeout, {FIT_FRACTION_ENV: repr(fraction)})
        status, detail = classify(rel, error)
        out.append(Guard(Path(rel), time.perf_counter() - start, status, detail))
    bar.close()
    return out


def format_report(guards: list[Guard], fraction: float) -> str:
    """One row per notebook (status, seconds, the failed check or the problem), then a total."""
    width = max([len("notebook")] + [len(g.path.as_posix()) for g in guards])
    rows = [f"make guards: training cut to {fraction:.0%} of its steps, profile tiny",
            f"{'notebook':<{width}}  {'seconds':>7}  status: detail"]
    for g in guards:
        rows.append(f"{g.path.as_posix():<{width}}  {g.seconds:>7.1f}  {g.status}: {g.detail}")
    bad = [g for g in guards if not g.ok]
    rows.append(f"{len(guards)} notebooks: {sum(g.status == 'guarded' for g in guards)} guarded, "
                f"{sum(g.status == 'passes (no trained result)' for g in guards)} claim no "
                f"trained result, {len(bad)} to fix"
                + ("" if not bad else ": " + ", ".join(g.path.as_posix() for g in bad)))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns 1 if a notebook still passes or crashed, else 0."""
    parser = argparse.ArgumentParser(prog="python -m utils.guards",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=0.02)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (600)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    parser.add_argument("notebooks", nargs="*", type=Path, help="only these (default: all)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    notebooks = [p.resolve() for p in args.notebooks] or find_notebooks(root)
    for p in notebooks:
        if not p.is_file() or p.parent.name not in PARTS:
            parser.error(f"{p} is not a notebook in a part folder {PARTS}")
    guards = run_guards(notebooks, args.fraction, args.timeout, root)
    print(format_report(guards, args.fraction))
    return 0 if all(g.ok for g in guards) else 1


if __name__ == "__main__":
    sys.exit(main())
