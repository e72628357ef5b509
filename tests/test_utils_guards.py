"""utils.guards: a notebook whose checks see its training fails one when fit is cut to 2%."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from utils.guards import NO_TRAINED_RESULT, Guard, classify, format_report, main, run_guards

ROOT = Path(__file__).resolve().parent.parent

TRAIN = '''
import torch
from torch import nn
from utils import check
from utils.training import fit

torch.manual_seed(0)
model = nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.linspace(-1, 1, 64)[:, None]

def step(batch):
    opt.zero_grad()
    loss = ((model(batch) - 3 * batch) ** 2).mean()
    loss.backward()
    opt.step()
    return {"loss": loss.item()}

result = fit(step, lambda s: x, 200, models=model, optimizers=opt, device="cpu", progress=False)
'''


def _notebook(path: Path, check_src: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_code_cell(TRAIN), new_code_cell(check_src)]), path)
    return path


def test_every_declared_notebook_exists():
    for rel in NO_TRAINED_RESULT:
        assert (ROOT / rel).is_file(), f"NO_TRAINED_RESULT names a missing notebook: {rel}"


def test_a_check_on_the_trained_result_guards_and_a_vacuous_one_does_not(tmp_path):
    guarded = _notebook(tmp_path / "vae" / "01_guarded.ipynb",
                        'check("the slope is learned", abs(model.weight.item() - 3) < 0.1)')
    vacuous = _notebook(tmp_path / "vae" / "02_vacuous.ipynb",
                        'check("the loss is finite", result.history["loss"][-1] < 1e9)')
    crash = _notebook(tmp_path / "vae" / "03_crash.ipynb",
                      'assert result.step == 200, "plotting needs every step"')
    out = {g.path.name: g for g in run_guards([guarded, vacuous, crash], 0.02, 120, tmp_path)}
    assert out["01_guarded.ipynb"].status == "guarded"
    assert out["01_guarded.ipynb"].detail == "the slope is learned"
    assert out["02_vacuous.ipynb"].status == "STILL PASSES"
    assert out["03_crash.ipynb"].status == "CRASHED"
    assert [g.ok for g in out.values()] == [True, False, False]
    # control: with (almost) all of its 200 steps, the guarded notebook's check holds
    assert run_guards([guarded], 0.999, 120, tmp_path)[0].status == "STILL PASSES"


def test_classify():
    assert classify("gans/04_dcgan.ipynb", None)[0] == "STILL PASSES"
    rel = next(iter(NO_TRAINED_RESULT))
    assert classify(rel, None) == ("passes (no trained result)", NO_TRAINED_RESULT[rel])
    err = "AssertionError:\ncheck failed: samples beat the prior (FD 80 vs 60)"
    assert classify("gans/04_dcgan.ipynb", err) == ("guarded",
                                                     "samples beat the prior (FD 80 vs 60)")
    assert classify("gans/04_dcgan.ipynb", "ValueError:\nshapes")[0] == "CRASHED"
    assert classify("gans/04_dcgan.ipynb", "AssertionError:\nplain assert")[0] == "CRASHED"


def test_report_lists_what_to_fix():
    guards = [Guard(Path("gans/04_dcgan.ipynb"), 1.0, "guarded", "FD beats the prior"),
              Guard(Path("vae/03_vae_on_digits.ipynb"), 2.0, "STILL PASSES", "no check failed")]
    text = format_report(guards, 0.02)
    assert "1 guarded" in text and "1 to fix: vae/03_vae_on_digits.ipynb" in text


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        run_guards([], fraction)


def test_main_refuses_a_file_outside_a_part(tmp_path):
    stray = tmp_path / "elsewhere" / "01_x.ipynb"
    _notebook(stray, "pass")
    with pytest.raises(SystemExit):
        main([str(stray)])
