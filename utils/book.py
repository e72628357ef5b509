"""Execute every notebook in one profile and render the HTML book (``make book``, ``make refresh``).

    python -m utils.book --profile {tiny,cpu,gpu} [--in-place] [--timeout SECONDS]
                         [--out _build] [--root REPO] [NOTEBOOK ...]

The notebooks run in reading order (the parts in ``PARTS``, then ``NN_slug.ipynb`` by name), each
in a fresh kernel on this interpreter, in its own folder, with ``DGM_PROFILE`` set. The executed
copies go to ``<out>/<profile>/notebooks/<part>/<name>.ipynb``, their HTML to
``<out>/<profile>/html/<part>/<name>.html``, next to an ``index.html`` that lists them. A failing
notebook does not stop the build: its partial copy is still written and rendered, so the reader
sees where it broke, and the process exits with status 1. ``--in-place`` also writes each executed
notebook back over its source (how authors commit the ``cpu`` outputs); a failed one never is.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError
from nbconvert import HTMLExporter
from nbconvert.preprocessors import CoalesceStreamsPreprocessor
from tqdm import tqdm

from utils.checks import TICK
from utils.config import PROFILES

__all__ = [
    "PARTS", "PROFILES", "Result", "build", "count_checks", "find_notebooks", "format_table",
    "main", "notebook_title", "render_index",
]

BOOK_TITLE = "Deep Generative Models — Theory to Practice"
PARTS = ("foundations", "divergences", "gans", "vae", "diffusion", "autoregressive", "ssm",
         "evaluation", "alignment", "notebooks")

REPO_ROOT = Path(__file__).resolve().parent.parent
_NOTEBOOK_NAME = re.compile(r"^\d+_[\w.-]+\.ipynb$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Result:
    """One executed notebook: ``path`` relative to the repository root (``part/NN_slug.ipynb``),
    wall-clock ``seconds`` (kernel start included), ``checks`` passed, ``error`` (``None`` if it
    ran through, else the exception's name and last lines) and the notebook's ``title``."""

    path: Path
    seconds: float
    checks: int
    error: str | None = None
    title: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def _reading_key(path: Path) -> tuple[int, str]:
    part = path.parent.name
    if part not in PARTS:
        raise ValueError(f"notebook {path} is not in a part folder; expected one of {PARTS}")
    return PARTS.index(part), path.name


def find_notebooks(root: Path | str) -> list[Path]:
    """The ``root/<part>/NN_slug.ipynb`` notebooks in reading order (``PARTS``, then by name).

    Other ``.ipynb`` files in a part folder are skipped with a note on stderr; checkpoints
    (``.ipynb_checkpoints/``) are never looked at.
    """
    root = Path(root)
    found = []
    for part in PARTS:
        for path in sorted((root / part).glob("*.ipynb")):
            if _NOTEBOOK_NAME.match(path.name):
                found.append(path)
            else:
                print(f"utils.book: skipping {path} (not named NN_slug.ipynb)", file=sys.stderr)
    return found


def _stream_texts(nb: nbformat.NotebookNode):
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "stream":
                text = output.get("text", "")
                yield "".join(text) if isinstance(text, list) else text


def count_checks(nb: nbformat.NotebookNode) -> int:
    """How many checks passed: lines ``"✓ label"`` (``utils.checks.check``) in stream outputs."""
    prefix = TICK + " "
    return sum(line.startswith(prefix) for text in _stream_texts(nb) for line in text.splitlines())


def notebook_title(nb: nbformat.NotebookNode) -> str | None:
    """The text of the first Markdown heading (``# ...``, any level), or ``None`` if none."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        for line in source.splitlines():
            match = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
            if match and match.group(1):
                return match.group(1)
    return None


def _describe(exc: BaseException) -> str:
    """The exception's name and its last lines (first lines for a timeout), without ANSI codes."""
    lines = [ln.rstrip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    lines = lines[:2] if isinstance(exc, CellTimeoutError) else lines[-3:]
    return "\n".join([type(exc).__name__ + ":"] + [ln[:200] for ln in lines])


def _kernel_manager() -> AsyncKernelManager:
    """A manager for ipykernel on *this* interpreter (``sys.executable``), ignoring any installed
    ``python3`` kernelspec, so the build uses the venv it was started from."""
    return AsyncKernelManager(kernel_name=NATIVE_KERNEL_NAME,
                              kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def _execute(nb: nbformat.NotebookNode, folder: Path, profile: str, timeout: int,
             extra_env: dict[str, str] | None = None) -> str | None:
    """Run ``nb`` in place in a fresh kernel; return ``None`` or the error's description."""
    env = {**os.environ, **(extra_env or {}), "DGM_PROFILE": profile}
    env.pop("MPLBACKEND", None)  # let ipykernel pick its inline backend, so figures are kept
    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, kernel_name="python3",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            record_timing=False, resources={"metadata": {"path": str(folder)}})
    try:
        client.execute(cleanup_kc=True, env=env)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, and the build goes on
        return _describe(exc)
    return None


def build(notebooks: list[Path], profile: str, out: Path | str, in_place: bool = False,
          timeout: int = 1800) -> list[Result]:
    """Execute ``notebooks`` (each at ``<root>/<part>/<name>.ipynb``) in ``profile``, write the
    executed copies and their HTML under ``out/<profile>/``, render ``index.html``, and return one
    ``Result`` per notebook in reading order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    base = Path(out) / profile
    exporter = HTMLExporter()
    results = []
    bar = tqdm(sorted(notebooks, key=_reading_key), unit="notebook")
    for src in bar:
        rel = Path(src.parent.name, src.name)
        bar.set_description(rel.as_posix())
        start = time.perf_counter()
        try:
            nb = nbformat.read(src, as_version=4)
        except Exception as exc:  # noqa: BLE001 - an unreadable notebook is one failure
            results.append(Result(rel, time.perf_counter() - start, 0, _describe(exc)))
            continue
        error = _execute(nb, src.parent, profile, timeout)
        seconds = time.perf_counter() - start
        nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
        title = notebook_title(nb) or src.stem
        results.append(Result(rel, seconds, count_checks(nb), error, title))
        copy = base / "notebooks" / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, copy)
        page = (base / "html" / rel).with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        page.write_text(body, encoding="utf-8")
        if in_place and error is None:
            nbformat.write(nb, src)
    bar.close()
    (base / "html").mkdir(parents=True, exist_ok=True)
    (base / "html" / "index.html").write_text(render_index(results, profile), encoding="utf-8")
    return results


_CSS = """body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.5}h1{margin-bottom:.2rem}h2{margin-top:1.6rem;text-transform:capitalize}
ul{list-style:none;padding:0}li{padding:.25rem 0;border-bottom:1px solid #eee}
.meta{color:#666;font-size:.9em}.failed{color:#b00020;font-weight:bold}a{color:#0645ad}"""


def render_index(results: list[Result], profile: str) -> str:
    """The book's ``index.html``: title, profile and the notebooks grouped by part, in the order
    given, each linked with its seconds and checks passed, failed ones marked."""
    failed = sum(not r.ok for r in results)
    summary = (f"{len(results)} notebooks, {sum(r.checks for r in results)} checks passed, "
               f"{failed} failed")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(BOOK_TITLE)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(BOOK_TITLE)}</h1>",
           f'<p class="meta">Profile <code>{html.escape(profile)}</code> · {summary}</p>']
    part = None
    for r in results:
        if Path(r.path).parent.name != part:
            if part is not None:
                out.append("</ul>")
            part = Path(r.path).parent.name
            out.append(f"<h2>{html.escape(part)}</h2><ul>")
        href = html.escape(Path(r.path).with_suffix(".html").as_posix(), quote=True)
        mark = "" if r.ok else ' <span class="failed">✗ FAILED</span>'
        out.append(f'<li><a href="{href}">{html.escape(r.title or Path(r.path).stem)}</a>{mark} '
                   f'<span class="meta">{r.seconds:.1f} s · {r.checks} checks passed</span></li>')
    if part is not None:
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def format_table(results: list[Result]) -> str:
    """A plain-text table: notebook, seconds, checks passed, status; each failure's error is
    indented under its row, and a total line ends it."""
    width = max([len("notebook")] + [len(Path(r.path).as_posix()) for r in results])
    rows = [f"{'notebook':<{width}}  {'seconds':>8}  {'checks':>6}  status"]
    for r in results:
        rows.append(f"{Path(r.path).as_posix():<{width}}  {r.seconds:>8.1f}  {r.checks:>6}  "
                    f"{'ok' if r.ok else 'FAILED'}")
        if not r.ok:
            rows.extend("    " + line for line in r.error.splitlines())
    failed = sum(not r.ok for r in results)
    rows.append(f"{len(results)} notebooks in {sum(r.seconds for r in results):.1f} s, "
                f"{sum(r.checks for r in results)} checks passed, {failed} failed")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (1 if any notebook failed, else 0)."""
    parser = argparse.ArgumentParser(prog="python -m utils.book",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("--in-place", action="store_true",
                        help="also write each executed notebook back over its source")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (1800)")
    parser.add_argument("--out", type=Path, default=None, help="build folder (ROOT/_build)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    parser.add_argument("notebooks", nargs="*", type=Path, help="only these (default: all)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    root = args.root.resolve()
    if args.notebooks:
        notebooks = []
        for path in args.notebooks:
            if not path.is_file():
                raise ValueError(f"notebook {path} does not exist")
            path = path.resolve()
            if path.parent.parent != root or path.parent.name not in PARTS:
                raise ValueError(f"notebook {path} is not in a part folder of {root}: {PARTS}")
            notebooks.append(path)
    else:
        notebooks = find_notebooks(root)
    if not notebooks:
        print(f"no notebooks found under {root}")
        return 0
    out = args.out if args.out is not None else root / "_build"
    results = build(notebooks, args.profile, out, in_place=args.in_place, timeout=args.timeout)
    print(format_table(results))
    print(f"HTML book: {Path(out) / args.profile / 'html' / 'index.html'}")
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
