"""Every notebook in the repository follows DESIGN.md §4.

It was executed top to bottom (execution counts 1, 2, 3, …) in one kernel, has no error outputs,
is under 2 MB, shows at least one figure, has the Colab cell (exactly the template of
``utils.colab``: pyproject's Source URL at the tag v<version>) first, and exactly
one ``profile(...)`` config cell, and at least one ``# NBVAL_CHECK_OUTPUT`` check cell whose
output nbval can compare across machines (no stderr, no images).
"""

import json
import re
from pathlib import Path

import pytest

from utils.colab import colab_cell, project_source

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", "_build", ".ipynb_checkpoints", ".git"}
NOTEBOOKS = sorted(p for p in ROOT.rglob("*.ipynb") if not SKIP & set(p.relative_to(ROOT).parts))
MAX_BYTES = 2 * 1024 * 1024
COLAB_CELL = colab_cell(*project_source(ROOT))  # pyproject's version and Source URL


def code_cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def source(cell):
    return "".join(cell["source"])


def test_the_book_has_its_first_notebook():
    assert ROOT / "foundations" / "01_probability_and_density_modeling.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_hygiene(path):
    cells = code_cells(path)
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "not executed top to bottom in one kernel"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    errors = [o.get("ename") for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"error outputs: {errors}"
    assert path.stat().st_size < MAX_BYTES, f"{path.stat().st_size} bytes, over 2 MB"
    assert any("image/png" in o.get("data", {}) for o in outputs), "shows no figure"

    colab = [c for c in cells if "google.colab" in source(c)]
    assert len(colab) == 1, "needs exactly one Colab install cell"
    assert source(colab[0]) == COLAB_CELL, "the Colab cell is not the template: run `make colab`"
    assert colab[0] is cells[0], "the Colab cell must be the first code cell"
    assert not colab[0].get("outputs"), "the Colab cell prints nothing outside Colab"
    config = [c for c in cells if re.search(r"\bprofile\(", source(c))]
    assert len(config) == 1, f"needs exactly one profile(...) config cell, found {len(config)}"

    checked = [c for c in cells if "# NBVAL_CHECK_OUTPUT" in source(c)]
    assert checked, "needs at least one # NBVAL_CHECK_OUTPUT check cell"
    for c in checked:
        for o in c.get("outputs", []):
            assert o.get("name") != "stderr", f"checked cell writes to stderr:\n{source(c)}"
            assert "image/png" not in o.get("data", {}), f"checked cell plots:\n{source(c)}"
