"""Tests for utils.plotting: every figure has a title and labelled axes; bad input is refused."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils.plotting import density_contours, image_grid, scatter2d, training_curves  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_image_grid_places_each_image():
    images = -torch.ones(5, 1, 4, 4)
    images[3] = 1.0  # the fourth image is white
    ax = image_grid(images, nrow=3, title="grid")
    shown = ax.get_images()[0].get_array()
    assert shown.shape == (2 * 5 + 1, 3 * 5 + 1)
    assert np.allclose(shown[6:10, 1:5], 1.0) and np.allclose(shown[1:5, 1:5], 0.0)
    assert ax.get_title() == "grid" and "5 images" in ax.get_xlabel()


def test_image_grid_rgb():
    ax = image_grid(torch.zeros(4, 3, 8, 8), title="rgb")
    assert ax.get_images()[0].get_array().shape == (2 * 9 + 1, 2 * 9 + 1, 3)


@pytest.mark.parametrize(
    "images", [torch.zeros(4, 2, 8, 8), torch.zeros(8, 8), np.zeros((1, 1, 2, 2))]
)
def test_image_grid_bad_input(images):
    with pytest.raises(ValueError, match="shape"):
        image_grid(images)


def test_image_grid_bad_range():
    with pytest.raises(ValueError, match="value_range"):
        image_grid(torch.zeros(1, 1, 2, 2), value_range=(1, 0))


def test_scatter2d_labels():
    ax = scatter2d(torch.randn(50, 2), title="data", lim=3, label="x")
    assert ax.get_title() == "data" and ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_xlim() == (-3, 3)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        scatter2d(torch.randn(5, 3))


def test_density_contours_evaluates_on_grid():
    calls = []

    def log_prob(x):
        calls.append(x.shape)
        return -0.5 * (x**2).sum(1)

    ax = density_contours(log_prob, (-3, 3), data=torch.randn(20, 2), title="N(0, I)", n_grid=30)
    assert calls == [(900, 2)]
    assert ax.get_title() == "N(0, I)" and ax.get_xlabel() == "$x_1$"


def test_density_contours_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        density_contours(lambda x: x[:, 0], (1, -1))
    with pytest.raises(ValueError, match="n_grid"):
        density_contours(lambda x: x[:, 0], n_grid=1)
    with pytest.raises(ValueError, match="one value per point"):
        density_contours(lambda x: x[:10, 0], n_grid=10)


def test_training_curves_smooths_and_skips_nan():
    history = {"step": [0, 1, 2, 3], "loss": [4.0, 2.0, float("nan"), 0.0]}
    ax = training_curves(history, smooth=2, title="loss")
    (line,) = ax.get_lines()
    assert np.allclose(line.get_ydata(), [3.0, 1.0]) and np.allclose(line.get_xdata(), [1, 3])
    assert ax.get_xlabel() == "step"


def test_training_curves_bad_input():
    with pytest.raises(ValueError, match="'step'"):
        training_curves({"loss": [1.0]})
    with pytest.raises(ValueError, match="unknown metrics"):
        training_curves({"step": [0], "loss": [1.0]}, keys=["acc"])
    with pytest.raises(ValueError, match="smooth"):
        training_curves({"step": [0], "loss": [1.0]}, smooth=0)
