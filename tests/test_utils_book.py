"""Tests of utils.book: the pure helpers on in-memory notebooks, and one real build end to end."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from utils.book import (
    PARTS,
    Result,
    build,
    count_checks,
    find_notebooks,
    format_table,
    main,
    notebook_title,
    render_index,
)
from utils.checks import TICK


def _stream(text: str, name: str = "stdout"):
    return new_output("stream", name=name, text=text)


def _write(path: Path, *cells) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=list(cells)), path)
    return path


# --- find_notebooks -------------------------------------------------------------------------------

def test_find_notebooks_reading_order(tmp_path):
    for rel in ["notebooks/00_reading_order.ipynb", "gans/02_wgan.ipynb", "gans/01_gan.ipynb",
                "foundations/10_later.ipynb", "foundations/02_b.ipynb", "alignment/01_dpo.ipynb",
                "evaluation/01_fid.ipynb"]:
        _write(tmp_path / rel)
    found = [p.relative_to(tmp_path).as_posix() for p in find_notebooks(tmp_path)]
    assert found == ["foundations/02_b.ipynb", "foundations/10_later.ipynb", "gans/01_gan.ipynb",
                     "gans/02_wgan.ipynb", "evaluation/01_fid.ipynb", "alignment/01_dpo.ipynb",
                     "notebooks/00_reading_order.ipynb"]
    assert PARTS.index("evaluation") < PARTS.index("alignment")


def test_find_notebooks_skips_checkpoints_other_folders_and_odd_names(tmp_path, capsys):
    _write(tmp_path / "vae/01_vae.ipynb")
    _write(tmp_path / "vae/.ipynb_checkpoints/01_vae-checkpoint.ipynb")
    _write(tmp_path / "vae/scratch.ipynb")
    _write(tmp_path / "utils/01_not_a_part.ipynb")
    _write(tmp_path / "vae/sub/01_nested.ipynb")
    assert find_notebooks(tmp_path) == [tmp_path / "vae/01_vae.ipynb"]
    assert "scratch.ipynb" in capsys.readouterr().err
    assert find_notebooks(tmp_path / "missing") == []


# --- count_checks, notebook_title -----------------------------------------------------------------

def test_count_checks_counts_tick_lines_in_streams_only():
    nb = new_notebook(cells=[
        new_markdown_cell(f"{TICK} not an output"),
        new_code_cell("", outputs=[_stream(f"{TICK} a\n{TICK} b\nloss 0.3\n"),
                                   _stream(f"{TICK} c\n", name="stderr")]),
        new_code_cell("", outputs=[
            _stream(f"  {TICK} indented\nx {TICK} inside\n{TICK}no-space\n"),
            new_output("execute_result", data={"text/plain": f"'{TICK} d'"}, execution_count=1),
            _stream([f"{TICK} e\n", f"{TICK} f"]),
        ]),
    ])
    assert count_checks(nb) == 5  # a, b, c, e, f
    assert count_checks(new_notebook()) == 0


def test_count_checks_after_carriage_returns():
    text = f"10%\r50%\r100%\n{TICK} done\n"
    nb = new_notebook(cells=[new_code_cell("", outputs=[_stream(text)])])
    assert count_checks(nb) == 1


def test_notebook_title():
    nb = new_notebook(cells=[
        new_code_cell("# a comment, not a heading"),
        new_markdown_cell("Some intro.\n\n## The *ELBO*, derived ##\n# Later"),
        new_markdown_cell("# Not first"),
    ])
    assert notebook_title(nb) == "The *ELBO*, derived"
    assert notebook_title(new_notebook(cells=[new_markdown_cell("# C# in a title")])) == \
        "C# in a title"
    assert notebook_title(new_notebook(cells=[new_markdown_cell("#hashtag, no heading")])) is None
    assert notebook_title(new_notebook()) is None


# --- render_index, format_table -------------------------------------------------------------------

RESULTS = [
    Result(Path("foundations/01_prob.ipynb"), 3.21, 4, None, "Probability <refresher>"),
    Result(Path("foundations/02_kl.ipynb"), 0.5, 1, "CellExecutionError:\nValueError: boom",
           "KL"),
    Result(Path("gans/01_gan.ipynb"), 12.0, 0, None, ""),
]


def test_render_index_groups_links_and_marks():
    page = render_index(RESULTS, "cpu")
    assert page.startswith("<!DOCTYPE html>") and "Deep Generative Models" in page
    assert "<code>cpu</code>" in page and "<style>" in page and "<link" not in page
    links = ['href="foundations/01_prob.html"', 'href="foundations/02_kl.html"',
             'href="gans/01_gan.html"']
    positions = [page.index(link) for link in links]
    assert positions == sorted(positions)
    assert page.count("<h2>") == 2 and page.index("<h2>foundations") < page.index("<h2>gans")
    assert "Probability &lt;refresher&gt;" in page  # escaped
    assert ">01_gan</a>" in page  # no title: the file's stem
    assert "3.2 s" in page and "4 checks passed" in page
    assert page.count("FAILED") == 1
    failed_item = next(line for line in page.splitlines() if "02_kl.html" in line)
    assert "FAILED" in failed_item
    assert "3 notebooks, 5 checks passed, 1 failed" in page


def test_render_index_empty():
    page = render_index([], "tiny")
    assert "<ul>" not in page and "0 notebooks" in page


def test_format_table():
    table = format_table(RESULTS)
    lines = table.splitlines()
    assert lines[0].split() == ["notebook", "seconds", "checks", "status"]
    assert lines[1].split() == ["foundations/01_prob.ipynb", "3.2", "4", "ok"]
    assert lines[2].split() == ["foundations/02_kl.ipynb", "0.5", "1", "FAILED"]
    assert lines[3].strip() == "CellExecutionError:" and lines[4].strip() == "ValueError: boom"
    assert lines[5].split() == ["gans/01_gan.ipynb", "12.0", "0", "ok"]
    assert lines[6] == "3 notebooks in 15.7 s, 5 checks passed, 1 failed"


# --- bad input ------------------------------------------------------------------------------------

def test_bad_input(tmp_path):
    with pytest.raises(SystemExit):
        main(["--profile", "huge", "--root", str(tmp_path)])
    with pytest.raises(ValueError, match="huge"):
        build([], "huge", tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        build([], "tiny", tmp_path, timeout=0)
    missing = tmp_path / "foundations" / "01_missing.ipynb"
    with pytest.raises(ValueError, match="01_missing.ipynb"):
        main(["--profile", "tiny", "--root", str(tmp_path), str(missing)])
    stray = _write(tmp_path / "elsewhere" / "01_x.ipynb")
    with pytest.raises(ValueError, match="part folder"):
        main(["--profile", "tiny", "--root", str(tmp_path), str(stray)])


def test_no_notebooks(tmp_path, capsys):
    assert main(["--profile", "tiny", "--root", str(tmp_path), "--out", str(tmp_path / "b")]) == 0
    assert "no notebooks found" in capsys.readouterr().out
    assert not (tmp_path / "b").exists()


# --- end to end -----------------------------------------------------------------------------------

def test_build_end_to_end(tmp_path, capsys, monkeypatch):
    repo, out = tmp_path / "repo", tmp_path / "build"
    # A registered "python3" kernelspec that cannot start: the build must use this interpreter.
    spec = tmp_path / "jupyter/kernels/python3/kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text('{"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", '
                    '"{connection_file}"], "display_name": "broken", "language": "python"}')
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    ok = _write(repo / "foundations/01_ok.ipynb",
                new_markdown_cell("# The OK notebook\n\nIt works."),
                new_code_cell('import os; print(os.environ["DGM_PROFILE"])'),
                new_code_cell(f'print("{TICK} a"); print("{TICK} b")'),
                new_code_cell("print(os.getcwd())"))
    broken = _write(repo / "foundations/02_broken.ipynb",
                    new_markdown_cell("# Broken"),
                    new_code_cell('print("before")'),
                    new_code_cell('raise ValueError("boom")'),
                    new_code_cell('print("never")'))
    broken_before = broken.read_bytes()

    status = main(["--profile", "tiny", "--in-place", "--timeout", "60", "--root", str(repo),
                   "--out", str(out)])
    printed = capsys.readouterr().out

    assert status == 1
    base = out / "tiny"
    for name in ["01_ok", "02_broken"]:
        assert (base / "notebooks/foundations" / f"{name}.ipynb").is_file()
        assert (base / "html/foundations" / f"{name}.html").is_file()
    index = (base / "html/index.html").read_text(encoding="utf-8")
    assert index.index('href="foundations/01_ok.html"') < index.index(
        'href="foundations/02_broken.html"')
    assert "The OK notebook" in index and "FAILED" in index

    rows = {line.split()[0]: line.split() for line in printed.splitlines() if ".ipynb" in line}
    assert rows["foundations/01_ok.ipynb"][2:] == ["2", "ok"]
    assert rows["foundations/02_broken.ipynb"][2:] == ["0", "FAILED"]
    assert "ValueError" in printed and "boom" in printed
    assert "Traceback" not in printed and "\x1b[" not in printed

    executed = nbformat.read(base / "notebooks/foundations/01_ok.ipynb", as_version=4)
    assert executed.cells[1].outputs[0].text == "tiny\n"  # the kernel saw DGM_PROFILE
    assert [c.execution_count for c in executed.cells if c.cell_type == "code"] == [1, 2, 3]
    assert Path(executed.cells[3].outputs[0].text.strip()) == ok.parent  # run in its folder
    partial = nbformat.read(base / "notebooks/foundations/02_broken.ipynb", as_version=4)
    assert partial.cells[1].outputs[0].text == "before\n"
    assert partial.cells[2].outputs[-1].output_type == "error"
    assert partial.cells[3].get("outputs") == []  # never reached
    assert "boom" in (base / "html/foundations/02_broken.html").read_text(encoding="utf-8")

    rewritten = nbformat.read(ok, as_version=4)  # --in-place: the ok notebook has its outputs
    assert rewritten.cells[2].outputs[0].text == f"{TICK} a\n{TICK} b\n"
    assert count_checks(rewritten) == 2
    assert broken.read_bytes() == broken_before  # a failed notebook is never written back
