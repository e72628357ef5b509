"""Tests for evaluation.fid: the Inception extractor's conventions (on a randomly initialised
network), the offline error, feature extraction, FID, and FID extrapolated to N → ∞."""

from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F

from evaluation import (
    InceptionFeatures,
    check_images,
    extract_features,
    fid,
    fid_infinity,
    frechet_distance_from_features,
)


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionFeatures(weights=None)


def test_inception_features_shape_resize_and_eval_mode(inception):
    seen = {}
    hook = inception.net.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    grey = torch.rand(2, 1, 16, 16) * 2 - 1
    out = inception(grey)
    hook.remove()
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    # the network sees the grey image repeated to RGB and resized bilinearly to 299×299
    expected = F.interpolate(grey.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                             align_corners=False)
    assert torch.equal(seen["x"], expected)
    # evaluation mode whatever .train() says: the same input gives the same features
    inception.train()
    assert not inception.training and not inception.net.training
    assert torch.equal(inception(grey), out)
    # the network in eval mode is per-sample: a batch equals its images one by one
    assert torch.allclose(torch.cat([inception(grey[:1]), inception(grey[1:])]), out, atol=1e-5)


def test_inception_resize_modes_change_the_features(inception):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    f = {mode: (setattr(inception, "resize", mode), inception(x))[1]
         for mode in ("bilinear", "bicubic", "nearest")}
    inception.resize = "bilinear"
    assert not torch.allclose(f["bilinear"], f["nearest"])
    assert not torch.allclose(f["bilinear"], f["bicubic"])


def test_inception_offline_error_names_the_digits_classifier(monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="digits_classifier"):
        InceptionFeatures(weights="imagenet")


def test_inception_bad_arguments():
    with pytest.raises(ValueError, match="weights"):
        InceptionFeatures(weights="tf")
    with pytest.raises(ValueError, match="resize"):
        InceptionFeatures(weights=None, resize="lanczos")


@pytest.mark.parametrize("x, match", [
    (torch.rand(2, 1, 8, 8) * 255, r"\[-1, 1\]"),
    (torch.zeros(2, 8, 8), "images"),
    (torch.zeros(2, 2, 8, 8), "C in"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.int64), "float"),
    (torch.full((2, 1, 8, 8), float("nan")), "finite"),
    ([[0.0]], "images"),
])
def test_check_images_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        check_images("x", x)


def test_check_images_accepts_rounding_overshoot():
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0005
    assert check_images("x", x) is x


def flatten(x):
    return x.flatten(1)


def test_extract_features_batches_and_fid_is_the_frechet_distance_of_features():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 1, 4, 4, generator=g) * 2 - 1
    b = torch.rand(40, 1, 4, 4, generator=g) * 1.6 - 0.8
    assert torch.equal(extract_features(a, flatten, batch_size=7), a.flatten(1))
    d = fid(a, b, extractor=flatten, batch_size=16)
    assert d.dtype == torch.float64
    assert float(d) == pytest.approx(float(frechet_distance_from_features(a.flatten(1),
                                                                          b.flatten(1))), rel=1e-12)
    assert float(fid(a, a, extractor=flatten)) < 1e-10 * float(a.var(0).sum())


def test_extract_features_bad_input():
    x = torch.zeros(3, 1, 4, 4)
    with pytest.raises(ValueError, match="callable"):
        extract_features(x, "inception")
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        extract_features(x, lambda t: t)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(x, flatten, batch_size=0)
    with pytest.raises(ValueError, match="N >= 2"):
        fid(x[:1], x, extractor=flatten)


def test_fid_infinity_slope_is_the_second_order_bias_and_the_intercept_removes_it():
    # real ~ N(0, I_D) (a large set), fake ~ N(δ, I_D): the true FD is ‖δ‖². For N fake samples
    # E FD_N ≈ ‖δ‖² + c/N with c = D (the mean term: E‖μ̂ − μ‖² = tr I / N) + D(D + 1)/4 (the
    # Bures term to second order, ¼ E‖Σ̂ − I‖²_F = ¼ (D + D²)/N for a Wishart Σ̂).
    g = torch.Generator().manual_seed(0)
    D = 8
    real = torch.randn(100_000, D, generator=g, dtype=torch.float64)
    fake = torch.randn(20_000, D, generator=g, dtype=torch.float64) + 0.1
    truth = 0.1 ** 2 * D
    sizes = [50, 100, 200, 400, 800, 1600]
    r = fid_infinity(real, fake, sizes, repeats=20, generator=g)
    assert r.sizes.tolist() == sizes and r.fids.shape == (6,)
    assert (r.fids[1:] < r.fids[:-1]).all(), "the bias falls as N grows"
    assert r.r2 > 0.98
    assert r.slope == pytest.approx(D + D * (D + 1) / 4, rel=0.15)
    assert abs(r.fid_inf - truth) < 0.25 * (float(r.fids[0]) - truth)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes=[10, 10]), "distinct"),
    (dict(sizes=[10, 1000]), "distinct integers in"),
    (dict(sizes=[1, 10]), "distinct integers in"),
    (dict(sizes=[10, 20], repeats=0), "repeats"),
    (dict(sizes=[10, 20], f_fake=torch.zeros(50, 3)), "f_fake"),
])
def test_fid_infinity_bad_input(kwargs, match):
    args = dict(f_real=torch.randn(50, 4), f_fake=torch.randn(50, 4), sizes=[10, 20])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fid_infinity(args.pop("f_real"), args.pop("f_fake"), args.pop("sizes"), **args)


def test_inception_imagenet_path_loads_a_state_dict_without_the_network(monkeypatch):
    # the download replaced by a state dict of torchvision's own Inception3 (with the auxiliary
    # head and 1,000 classes, as the real file has): the weights path builds, loads, drops the
    # head and the classifier, and returns 2,048 features in evaluation mode
    import torchvision.models._api as api
    from torchvision.models import inception_v3

    torch.manual_seed(1)
    reference = inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=1000)
    state = reference.state_dict()
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: state)
    features = InceptionFeatures(weights="imagenet")
    assert features.net.AuxLogits is None and not features.net.transform_input
    x = torch.rand(2, 3, 20, 20) * 2 - 1
    reference.eval()
    reference.fc = torch.nn.Identity()
    expected = reference(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
    assert torch.allclose(features(x), expected, atol=1e-5)
