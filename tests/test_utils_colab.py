"""utils.colab: the Colab cell is written from one template, from pyproject's version and URL."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from utils.colab import colab_cell, main, project_source, set_version, write_cells

ROOT = Path(__file__).resolve().parent.parent

PYPROJECT = '''[project]
name = "dgm-book"
version = "1.2.3"

[project.urls]
Source = "https://github.com/someone/fork-of-the-book"
'''


def _repo(tmp_path, pyproject=PYPROJECT, cells=("print('hi')",)):
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "vae").mkdir()
    nb = new_notebook(cells=[new_code_cell(src) for src in cells])
    nbformat.write(nb, tmp_path / "vae" / "01_x.ipynb")
    return tmp_path


def test_the_books_own_source_and_version():
    name, version, url = project_source(ROOT)
    assert name == "dgm-book" and url.startswith("https://github.com/")
    from utils.colab import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version == project["version"] and url == project["urls"]["Source"]


def test_the_cell_pins_the_version_tag_and_runs_only_on_colab():
    src = colab_cell("dgm-book", "1.2.3", "https://github.com/a/b")
    ast.parse(src)  # valid Python
    assert '"dgm-book @ git+https://github.com/a/b@v1.2.3"' in src
    assert 'if "google.colab" in sys.modules:' in src
    namespace = {}
    exec(compile(src, "colab", "exec"), namespace)  # not on Colab here: installs nothing


def test_write_cells_rewrites_and_check_reports(tmp_path, capsys):
    root = _repo(tmp_path, cells=['import sys\nif "google.colab" in sys.modules:\n    pass',
                                  "x = 1"])
    assert main(["--check", "--root", str(root)]) == 1
    assert "differs from the template" in capsys.readouterr().out
    assert write_cells(root) == [root / "vae" / "01_x.ipynb"]
    nb = nbformat.read(root / "vae" / "01_x.ipynb", as_version=4)
    assert nb.cells[0].source == colab_cell("dgm-book", "1.2.3",
                                            "https://github.com/someone/fork-of-the-book")
    assert nb.cells[1].source == "x = 1"
    assert write_cells(root, check_only=True) == []
    assert main(["--check", "--root", str(root)]) == 0


def test_set_version_bumps_the_pin(tmp_path):
    root = _repo(tmp_path, cells=['"google.colab"'])
    assert main(["--set-version", "2.0.0", "--root", str(root)]) == 0
    assert project_source(root)[1] == "2.0.0"
    nb = nbformat.read(root / "vae" / "01_x.ipynb", as_version=4)
    assert "@v2.0.0" in nb.cells[0].source


def test_set_version_on_the_books_own_pyproject_layout(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    set_version("9.9.9", tmp_path)
    assert project_source(tmp_path)[1] == "9.9.9"
    assert project_source(ROOT)[1] != "9.9.9"


@pytest.mark.parametrize("version", ["1.2", "v1.2.3", "1.2.3rc1", "", 123])
def test_bad_version(tmp_path, version):
    with pytest.raises(ValueError, match="X.Y.Z"):
        set_version(version, _repo(tmp_path))
    with pytest.raises(ValueError, match="X.Y.Z"):
        colab_cell("dgm-book", version, "https://github.com/a/b")


@pytest.mark.parametrize("url", ["http://github.com/a/b", "github.com/a/b",
                                 "https://github.com/a/b.git", "https://github.com/a/b/"])
def test_bad_url(url):
    with pytest.raises(ValueError, match="source URL"):
        colab_cell("dgm-book", "1.0.0", url)


def test_pyproject_without_a_source_url_or_a_version(tmp_path):
    with pytest.raises(ValueError, match="Source"):
        project_source(_repo(tmp_path, pyproject='[project]\nname = "x"\nversion = "1.0.0"\n'))
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndynamic = ["version"]\n[project.urls]\nSource = "https://a.b/c"\n')
    with pytest.raises(ValueError, match="version"):
        project_source(tmp_path)


@pytest.mark.parametrize("cells", [("x = 1",), ('"google.colab"', '"google.colab"')])
def test_a_notebook_needs_exactly_one_colab_cell(tmp_path, cells):
    with pytest.raises(ValueError, match="exactly one Colab cell"):
        write_cells(_repo(tmp_path, cells=cells))
