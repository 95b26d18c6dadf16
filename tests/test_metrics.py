"""visualmixer.eval.metrics: SSIM/MS-SSIM/PSNR, re-identification, prior-only baseline, face rate."""

import math

import pytest
import torch

from visualmixer.eval import metrics as M


def smooth(n=4, c=1, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def test_ssim_identity_and_noise():
    x = smooth()
    assert torch.allclose(M.ssim(x, x), torch.ones(4, dtype=torch.float64))
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    s = M.ssim(x, noisy)
    assert s.shape == (4,) and s.dtype == torch.float64
    assert (s < 0.9).all()


def test_ssim_uint8_equals_float():
    x = (smooth() * 255).round().to(torch.uint8)
    y = (smooth(seed=1) * 255).round().to(torch.uint8)
    assert torch.allclose(M.ssim(x, y), M.ssim(x.float() / 255, y.float() / 255), atol=1e-6)


def test_ssim_small_images_and_errors():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(M.ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert M.ssim(x[0], x[0]).shape == (1,)
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(x, torch.rand(2, 3, 6, 6))
    with pytest.raises(ValueError, match="3x3"):
        M.ssim(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))


def test_ms_ssim_where_size_allows():
    assert M.ms_ssim(smooth(h=28, w=28), smooth(h=28, w=28)) is None
    x = smooth(n=2, h=64, w=64)
    assert M.ms_ssim_scales(64, 64) == 3 and M.ms_ssim_scales(200, 200) == 5
    v = M.ms_ssim(x, x)
    assert v is not None and torch.allclose(v, torch.ones(2, dtype=torch.float64), atol=1e-4)


def test_psnr_known_value_and_cap():
    x = torch.zeros(2, 1, 8, 8)
    y = torch.full_like(x, 0.1)
    assert torch.allclose(M.psnr(x, y), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-4)
    assert (M.psnr(x, x) == 100.0).all()


def test_reid_rate():
    x = smooth(n=20)
    r = M.reid_rate(x, x)
    assert r["rate"] == 1.0 and r["chance"] == pytest.approx(1 / 20) and r["rank"].eq(0).all()
    # brightness/contrast changes do not fool NCC
    assert M.reid_rate(0.5 * x + 0.2, x)["rate"] == 1.0
    # estimates of other images are not re-identified
    r = M.reid_rate(x.roll(1, dims=0), x)
    assert r["rate"] == 0.0
    # explicit targets, L2 metric, pooled
    r = M.reid_rate(x[:5], x, targets=torch.arange(5), metric="l2", pool=2)
    assert r["rate"] == 1.0 and r["hits"].shape == (5,)
    with pytest.raises(ValueError, match="metric"):
        M.reid_rate(x, x, metric="cos")
    with pytest.raises(ValueError, match=r"x_hat and gallery must share \(C, H, W\)"):
        M.reid_rate(x, smooth(n=3, h=16, w=16))


def test_distinct_sources_lists_each_rows_originals_once():
    src = torch.tensor([[3, 3, 1, 1, 1], [0, 0, 0, 0, 0], [2, 4, 2, 4, 2]])
    assert M.distinct_sources(src).tolist() == [[1, 3], [0, 0], [2, 4]]


def test_any_source_scores_take_the_closest_source():
    g = smooth(n=6, seed=3)
    est = g[[1, 0, 4]] + 0.01 * smooth(n=3, seed=4)  # estimates of 1, 0 and 4
    main = torch.tensor([1, 0, 2])  # the third estimate's main source is 2, but 4 is also a source
    sources = torch.tensor([[1, 1, 3], [0, 0, 0], [2, 2, 4]])
    out = M.image_scores(g[main], est, gallery=g, targets=main, sources=sources)
    assert out["reid"]["rate"] == pytest.approx(2 / 3)  # against the main source only
    assert out["any_source"]["reid"] == 1.0
    assert out["any_source"]["ssim"]["mean"] > out["ssim"]["mean"]
    assert out["any_source"]["ssim"]["min"] > 0.9
    # a source list without the estimate's original does not count it
    wrong = torch.tensor([[2, 3, 3], [0, 0, 0], [2, 2, 2]])
    out = M.image_scores(g[main], est, gallery=g, targets=main, sources=wrong)
    assert out["any_source"]["reid"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="gallery"):
        M.image_scores(g[main], est, sources=sources)


def test_summarize():
    s = M.summarize(torch.tensor([0.1, 0.5, float("nan"), 0.3]))
    assert s["n"] == 3 and s["max"] == 0.5 and math.isclose(s["mean"], 0.3, rel_tol=1e-6)
    assert M.summarize(None) is None


def test_prior_baseline():
    x = torch.zeros(4, 1, 4, 4)
    x[2:] = 1.0
    y = torch.tensor([0, 0, 1, 1])
    means = M.class_mean_images(x, y, num_classes=3)
    assert means.shape == (3, 1, 4, 4)
    assert means[0].eq(0).all() and means[1].eq(1).all()
    assert torch.allclose(means[2], torch.full((1, 4, 4), 0.5))  # absent class: global mean
    assert torch.allclose(M.global_mean_image(x), torch.full((1, 1, 4, 4), 0.5))
    assert torch.equal(M.prior_guess(torch.tensor([1, 0]), means), means[[1, 0]])
    with pytest.raises(ValueError, match="labels must have 4 entries, got 3"):
        M.class_mean_images(x, y[:3])


def test_prior_scores_keys_and_class_mean_beats_global():
    g = torch.Generator().manual_seed(0)
    base = smooth(n=2, seed=3)
    y = torch.randint(0, 2, (60,), generator=g)
    x = (base[y] + 0.05 * torch.randn(60, 1, 32, 32, generator=g)).clamp(0, 1)
    out = M.prior_scores(x[:20], y[:20], x[20:], y[20:], num_classes=2, predicted=y[:20])
    assert set(out) == {"class_mean", "global_mean", "predicted_class_mean"}
    assert out["class_mean"]["ssim"]["mean"] > out["global_mean"]["ssim"]["mean"]
    assert out["class_mean"]["reid"]["chance"] == pytest.approx(1 / 20)


def test_face_detection_rate_astronaut():
    pytest.importorskip("cv2")
    from skimage.data import astronaut

    from visualmixer.eval.attacks import haar_available

    if not haar_available():
        pytest.skip("OpenCV without Haar cascades")
    a = torch.from_numpy(astronaut().copy()).permute(2, 0, 1)
    r = M.face_detection_rate(torch.stack([a, torch.zeros_like(a)]))
    assert r["detected"].tolist() == [True, False] and r["rate"] == 0.5


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    x, y = smooth(n=2, c=3, h=24, w=20), smooth(n=2, c=3, h=24, w=20, seed=5)
    ours = M.ssim(x, y)
    for i in range(2):
        ref = structural_similarity(
            x[i].numpy(), y[i].numpy(), channel_axis=0, data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )  # fmt: skip
        assert abs(float(ours[i]) - ref) < 1e-5
