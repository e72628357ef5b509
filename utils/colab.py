"""The Colab cell of every notebook, written from one template (``make colab``, ``make release``).

    python -m utils.colab [--check] [--set-version X.Y.Z] [--root REPO]

The book's source URL is declared once, as ``Source`` in ``[project.urls]`` of ``pyproject.toml``,
and its version once, as ``[project] version``. Every notebook's first code cell is
:func:`colab_cell` of those two: on Colab it pip-installs the package from the source URL at the
tag ``v<version>``; anywhere else it does nothing. So a new URL or a release is one edit and one
command: ``python -m utils.colab`` rewrites the cells (``--check`` only reports the notebooks
whose cell differs, exit 1), and ``--set-version`` first bumps the version in ``pyproject.toml``.
The tag itself is made by ``make release``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from utils.book import REPO_ROOT, find_notebooks

__all__ = ["MARKER", "colab_cell", "main", "project_source", "set_version", "write_cells"]

MARKER = "google.colab"  # the cell that mentions it is the Colab cell
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

TEMPLATE = '''\
# Colab: install the book's package at its release {tag}; anywhere else this cell does nothing.
# Written by `make colab` from pyproject.toml (opened from a fork? see the README's Colab section).
import subprocess
import sys

if "{marker}" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "{name} @ git+{url}@{tag}"],
                   check=True)'''


def project_source(root: Path | str = REPO_ROOT) -> tuple[str, str, str]:
    """(distribution name, version, source URL) from ``root/pyproject.toml``."""
    path = Path(root) / "pyproject.toml"
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    url = project.get("urls", {}).get("Source")
    if not url:
        raise ValueError(f"{path}: [project.urls] needs a Source URL (the book's repository)")
    version = project.get("version", "")
    if not _VERSION.match(version):
        raise ValueError(f"{path}: [project] version must be X.Y.Z, got {version!r}")
    return project["name"], version, url


def colab_cell(name: str, version: str, url: str) -> str:
    """The Colab cell's source: ``pip install "<name> @ git+<url>@v<version>"`` on Colab only."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"version must be X.Y.Z, got {version!r}")
    if not isinstance(url, str) or not re.match(r"^https://[\w.-]+/[\w./-]+$", url) \
            or url.endswith((".git", "/")):
        raise ValueError(f"the source URL must be https://host/owner/repo, got {url!r}")
    return TEMPLATE.format(tag=f"v{version}", marker=MARKER, name=name, url=url)


def set_version(version: str, root: Path | str = REPO_ROOT) -> None:
    """Write ``version`` (X.Y.Z) as ``[project] version`` in ``root/pyproject.toml``."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"version must be X.Y.Z, got {version!r}")
    path = Path(root) / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    new, n = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', text, count=1)
    if n != 1:
        raise ValueError(f"{path}: found no line 'version = \"...\"' to update")
    path.write_text(new, encoding="utf-8")


def write_cells(root: Path | str = REPO_ROOT, check_only: bool = False) -> list[Path]:
    """Make every notebook's Colab cell the template; return the notebooks that differed
    (rewritten, unless ``check_only``). A notebook with no Colab cell, or more than one, is a
    ``ValueError``. Outputs and execution counts are left as they are (the cell prints nothing)."""
    root = Path(root)
    expected = colab_cell(*project_source(root))
    changed = []
    for path in find_notebooks(root):
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code" and MARKER in c.source]
        if len(cells) != 1:
            raise ValueError(f"{path}: needs exactly one Colab cell, found {len(cells)}")
        if cells[0].source != expected:
            changed.append(path)
            if not check_only:
                cells[0].source = expected
                nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.colab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if any differ")
    parser.add_argument("--set-version", metavar="X.Y.Z", help="bump the version first")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    if args.set_version is not None:
        if args.check:
            parser.error("--check and --set-version exclude each other")
        set_version(args.set_version, args.root)
    changed = write_cells(args.root, check_only=args.check)
    name, version, url = project_source(args.root)
    for path in changed:
        print(f"{path.relative_to(args.root)}: its Colab cell "
              f"{'differs from' if args.check else 'was rewritten to'} the template")
    print(f"{len(changed)} notebook(s) {'differ' if args.check else 'rewritten'}; the template "
          f"installs {name} @ git+{url}@v{version}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
