"""Privacy metrics between originals ``x`` and an attacker's estimates ``x̂``.

All functions take batched ``(N, C, H, W)`` tensors (or one ``(C, H, W)`` image), uint8 or floating
in [0, 1], and return per-image scores as a float64 tensor of shape ``(N,)`` unless stated
otherwise. :func:`summarize` turns them into ``{"mean", "std", "min", "max", "n"}``.

The prior-only baseline (:func:`prior_scores`) is the attacker's best *image-independent* guess:
the mean training image of the image's class (labels leak by construction, docs/method.md) and the global
mean training image. Any score is only a leak to the extent it beats this baseline.

Examples
--------
>>> import torch
>>> from visualmixer.eval import metrics
>>> x = torch.rand(4, 1, 28, 28)
>>> float(metrics.ssim(x, x).min())
1.0
>>> metrics.reid_rate(x, x)["rate"]
1.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from visualmixer.core.imageops import add_batch_axis, to_float
from visualmixer.tools.stats import summary_stats

__all__ = [
    "ssim",
    "ms_ssim",
    "psnr",
    "reid_rate",
    "distinct_sources",
    "face_detection_rate",
    "summarize",
    "class_mean_images",
    "global_mean_image",
    "prior_guess",
    "prior_scores",
    "image_scores",
]

_MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = add_batch_axis(x, "x")
    y, _ = add_batch_axis(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x and x_hat are empty (shape {tuple(x.shape)}): give at least one image")
    return to_float(x), to_float(y).to(x.device)


def _kernel_for(h: int, w: int, kernel_size: int) -> int:
    k = min(kernel_size, h, w)
    if k % 2 == 0:
        k -= 1
    return max(k, 1)


def _gauss(k: int, sigma: float, dtype) -> torch.Tensor:
    """The SSIM window: ``k`` normalised Gaussian taps (``k`` = 11 by the SSIM definition, not ±3σ).

    Not :func:`visualmixer.core.saliency.gaussian_blur2d`: SSIM fixes the window size
    independently of σ and slides it over valid positions only (no padding), the definition
    scikit-image and torchmetrics share.
    """
    t = torch.arange(k, dtype=dtype) - (k - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(x, x_hat, *, kernel_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004; Gaussian window, data range 1).

    The same definition as torchmetrics' and scikit-image's (``gaussian_weights=True``,
    ``use_sample_covariance=False``): the SSIM map over the positions where the window fits
    inside the image, averaged over positions and channels. Implemented here with two separable
    convolutions (importing torchmetrics costs seconds).

    Parameters
    ----------
    x, x_hat : torch.Tensor
        Originals and estimates, same shape ``(N, C, H, W)``; colour SSIM is the channel mean.
    kernel_size : int
        Gaussian window size; shrunk to the largest odd size that fits images smaller than it.
    sigma : float
        Gaussian window standard deviation (shrunk with the window to at most a sixth of it).

    Returns
    -------
    torch.Tensor
        float64 ``(N,)`` in [-1, 1]; 1 means identical.
    """
    x, y = _pair(x, x_hat)
    h, w = x.shape[2:]
    k = _kernel_for(h, w, kernel_size)
    if k < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {(h, w)}")
    s = min(sigma, k / 6.0) if k < kernel_size else sigma
    return _ssim_parts(x, y, k, s)[0]


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, k: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term, float64 ``(N,)`` each."""
    n, c, h, w = x.shape
    g = _gauss(k, sigma, torch.float64).to(x.device)
    x = x.double().reshape(n * c, 1, h, w)
    y = y.double().reshape(n * c, 1, h, w)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (NC, 5, H, W)
    blur = F.conv2d(stack, g.view(1, 1, 1, -1).expand(5, 1, 1, k), groups=5)
    blur = F.conv2d(blur, g.view(1, 1, -1, 1).expand(5, 1, k, 1), groups=5)
    mx, my, exx, eyy, exy = blur.unbind(1)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * cxy + c2) / (vx + vy + c2)
    smap = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return smap.reshape(n, -1).mean(dim=1), cs.reshape(n, -1).mean(dim=1)


def ms_ssim_scales(height: int, width: int, kernel_size: int = 11) -> int:
    """Number of MS-SSIM scales (<= 5) that fit an image, or 0 if fewer than 3 fit.

    The shorter side must exceed ``(kernel_size - 1) * 2 ** (scales - 1)`` (as in torchmetrics).
    """
    side = min(height, width)
    for scales in (5, 4, 3):
        if side > (kernel_size - 1) * 2 ** (scales - 1):
            return scales
    return 0


def ms_ssim(x, x_hat, *, kernel_size: int = 11) -> torch.Tensor | None:
    """Multi-scale SSIM per image (Wang et al. 2003), or ``None`` when the images are too small.

    Uses the standard five weights when they fit (shorter side > 160 px with an 11-px window), else
    the first four or three weights, renormalised (shorter side > 80 / 40 px). Contrast-structure
    terms are clipped at 0 before the weighted product (torchmetrics' ``normalize="relu"``).

    Returns
    -------
    torch.Tensor or None
        float64 ``(N,)``, or ``None`` if the size does not allow MS-SSIM.
    """
    x, y = _pair(x, x_hat)
    scales = ms_ssim_scales(x.shape[2], x.shape[3], kernel_size)
    if scales == 0:
        return None
    betas = _MS_SSIM_BETAS[:scales]
    total = sum(betas)
    out = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    for j in range(scales):
        sim, cs = _ssim_parts(x, y, kernel_size, 1.5)
        b = betas[j] / total
        if j < scales - 1:
            out = out * cs.clamp_min(0) ** b
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            out = out * sim.clamp_min(0) ** b
    return out


def psnr(x, x_hat, *, max_db: float = 100.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB (data range 1), capped at ``max_db``."""
    x, y = _pair(x, x_hat)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    out = 10 * torch.log10(1.0 / mse)
    return out.nan_to_num(posinf=max_db).clamp(max=max_db)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def reid_rate(
    x_hat,
    gallery,
    targets: torch.Tensor | None = None,
    *,
    metric: str = "ncc",
    pool: int = 1,
    chunk: int = 1024,
    candidates: torch.Tensor | None = None,
) -> dict:
    """Re-identification: is each estimate's nearest neighbour in a gallery of originals its own?

    Parameters
    ----------
    x_hat : torch.Tensor
        ``(N, C, H, W)`` attacker estimates.
    gallery : torch.Tensor
        ``(G, C, H, W)`` originals; by default ``gallery[i]`` is the original of ``x_hat[i]``.
    targets : torch.Tensor, optional
        ``(N,)`` int index into ``gallery`` of each estimate's original (default ``arange(N)``).
    metric : {"ncc", "l2"}
        ``"ncc"``: normalised cross-correlation (invariant to brightness and contrast);
        ``"l2"``: Euclidean distance.
    pool : int
        Average-pool both sides by this factor first (1 = full resolution).
    chunk : int
        Estimates compared per block (bounds memory at ``chunk × G``).
    candidates : torch.Tensor, optional
        ``(N, D)`` gallery indices per estimate (e.g. :func:`distinct_sources` of a mixed
        image): also return ``any_rate``, the share of estimates whose nearest original is one of
        them (a tie for nearest shared evenly, as for ``rate``).

    Returns
    -------
    dict
        ``rate`` (share re-identified; an estimate whose own original ties for nearest with
        ``k`` others counts ``1 / (k + 1)``, so a constant estimate scores chance), ``chance``
        (``1 / G``), ``hits`` (bool tensor ``(N,)``: its own original strictly nearest), ``rank``
        (int tensor ``(N,)``, 0 = nearest), ``ties`` (int tensor ``(N,)``: other originals exactly
        as close as its own), ``nearest`` (int tensor ``(N,)``: the index of each estimate's
        nearest original in the gallery).
    """
    xh, _ = add_batch_axis(x_hat, "x_hat")
    g, _ = add_batch_axis(gallery, "gallery")
    if xh.shape[1:] != g.shape[1:]:
        raise ValueError(
            f"x_hat and gallery must share (C, H, W), got {tuple(xh.shape[1:])} and {tuple(g.shape[1:])}"
        )
    if metric not in ("ncc", "l2"):
        raise ValueError(f"metric must be 'ncc' or 'l2', got {metric!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    n = xh.shape[0]
    if targets is None:
        if n > g.shape[0]:
            raise ValueError("without targets, the gallery must hold at least one original per estimate")
        targets = torch.arange(n)
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
    if targets.numel() != n:
        raise ValueError(f"targets must have {n} entries, got {targets.numel()}")
    xh, g = to_float(xh), to_float(g).to(xh.device)
    if pool > 1:
        xh, g = F.avg_pool2d(xh, pool, ceil_mode=True), F.avg_pool2d(g, pool, ceil_mode=True)
    if metric == "ncc":
        gf = _standardise(g)
    else:
        gf = g.reshape(g.shape[0], -1).double()
    ranks, ties, nearest, any_credit = [], [], [], []
    for s in range(0, n, chunk):
        q = xh[s : s + chunk]
        if metric == "ncc":
            score = _standardise(q) @ gf.T  # higher is closer
        else:
            score = -torch.cdist(q.reshape(q.shape[0], -1).double(), gf)
        t = targets[s : s + chunk].to(score.device)
        own = score.gather(1, t[:, None])
        ranks.append((score > own).sum(dim=1).cpu())
        ties.append((score == own).sum(dim=1).cpu() - 1)  # others exactly as close as its own
        nearest.append(score.argmax(dim=1).cpu())
        if candidates is not None:
            c = torch.as_tensor(candidates[s : s + chunk], dtype=torch.long).to(score.device)
            top = score.amax(dim=1, keepdim=True)
            first = ~(c[:, :, None] == c[:, None, :]).tril(-1).any(dim=-1)  # each index counted once
            hit = ((score.gather(1, c) == top) & first).sum(dim=1)
            any_credit.append((hit / (score == top).sum(dim=1)).double().cpu())
    empty = torch.zeros(0, dtype=torch.long)
    rank = torch.cat(ranks) if ranks else empty
    tie = torch.cat(ties) if ties else empty
    # a tie for nearest is shared evenly (a random pick among the tied): a constant estimate,
    # equally close to every original, scores chance, not a hit
    credit = (rank == 0).double() / (1 + tie).double()
    return {
        "rate": float(credit.mean()) if n else float("nan"),
        "chance": 1.0 / g.shape[0],
        "hits": (rank == 0) & (tie == 0),
        "rank": rank,
        "ties": tie,
        "nearest": torch.cat(nearest) if nearest else empty,
        **({"any_rate": float(torch.cat(any_credit).mean()) if n else float("nan")} if candidates is not None else {}),
    }


def distinct_sources(sources: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` int64: the distinct entries of each row of ``sources`` (``(N, R)``, e.g. which
    original each region of a mixed image came from), in increasing order; ``D`` is the largest
    count of a row, and rows with fewer distinct entries repeat their smallest."""
    srt = torch.sort(torch.as_tensor(sources, dtype=torch.long), dim=1).values
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    d = int(first.sum(dim=1).max()) if srt.numel() else 0
    order = torch.argsort((~first).to(torch.int8), dim=1, stable=True)[:, :d]  # distinct entries first
    return torch.where(first.gather(1, order), srt.gather(1, order), srt[:, :1])


def face_detection_rate(images, *, detector: str = "haar", **kwargs) -> dict:
    """Share of images in which a face detector finds at least one face (attack A6).

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` uint8 or float images.
    detector : {"haar", "mtcnn"}
        OpenCV Haar cascade (needs opencv-python-headless < 5) or facenet-pytorch MTCNN.
    **kwargs
        Passed to the detector (see :mod:`visualmixer.eval.attacks.a6_faces`).

    Returns
    -------
    dict
        ``rate`` (float), ``detected`` (bool tensor ``(N,)``), ``counts`` (int tensor ``(N,)``).
    """
    from visualmixer.eval.attacks.a6_faces import detect_faces

    boxes = detect_faces(images, detector=detector, **kwargs)
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.long)
    detected = counts > 0
    return {
        "rate": float(detected.double().mean()) if len(boxes) else float("nan"),
        "detected": detected,
        "counts": counts,
    }


def summarize(values) -> dict:
    """``{"mean", "std", "min", "max", "n"}`` of a per-image score (NaNs ignored); ``None`` passes through.

    :func:`visualmixer.tools.stats.summary_stats` (the one summary helper); with no value left the
    statistics are ``None`` and ``n`` is 0.
    """
    return None if values is None else summary_stats(values)


# --------------------------------------------------------------------------------------------
# Prior-only baseline
# --------------------------------------------------------------------------------------------


def class_mean_images(images, labels, num_classes: int | None = None) -> torch.Tensor:
    """Mean training image per class, float32 in [0, 1], shape ``(K, C, H, W)``.

    Classes absent from ``labels`` get the global mean image.
    """
    x, _ = add_batch_axis(images, "images")
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(x.device)
    if y.numel() != x.shape[0]:
        raise ValueError(f"labels must have {x.shape[0]} entries, got {y.numel()}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError("labels must be non-negative class indices")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    x = to_float(x)
    sums = torch.zeros((k,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device)
    sums.index_add_(0, y, x.double())
    counts = torch.bincount(y, minlength=k).double()
    glob = x.double().mean(dim=0, keepdim=True).expand_as(sums)
    means = torch.where(counts.view(-1, 1, 1, 1) > 0, sums / counts.clamp_min(1).view(-1, 1, 1, 1), glob)
    return means.float()


def global_mean_image(images) -> torch.Tensor:
    """The mean training image, ``(1, C, H, W)`` float32 in [0, 1]."""
    x, _ = add_batch_axis(images, "images")
    return to_float(x).double().mean(dim=0, keepdim=True).float()


def prior_guess(labels, class_means: torch.Tensor) -> torch.Tensor:
    """The attacker's image-independent guess for each image: the mean image of its (predicted) class."""
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(class_means.device)
    return class_means[y]


def prior_scores(
    x,
    labels,
    train_images,
    train_labels,
    *,
    num_classes: int | None = None,
    predicted=None,
    reid: bool = True,
) -> dict:
    """Scores of the prior-only guesses against the originals ``x``.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` originals (the victim's images).
    labels : torch.Tensor
        ``(N,)`` their true labels (these leak by construction).
    train_images, train_labels : torch.Tensor
        The attacker's own training data that defines the prior.
    num_classes : int, optional
        Number of classes.
    predicted : torch.Tensor, optional
        ``(N,)`` classes predicted by the attacker (e.g. attack A4); adds ``"predicted_class_mean"``.
    reid : bool
        Also compute the re-identification rate of the guesses. Every image of a class gets the
        same guess, but that guess is nearest to one victim of its class, so the rate is up to
        (classes) / (victims), not 1 / (victims): what the labels alone re-identify.

    Returns
    -------
    dict
        ``{"class_mean": {...}, "global_mean": {...}[, "predicted_class_mean": {...}]}`` where each
        entry holds per-image ``"ssim"``/``"psnr"`` summaries (and ``"ms_ssim"`` when the size allows).
    """
    xb, _ = add_batch_axis(x, "x")
    xb = to_float(xb)
    means = class_mean_images(train_images, train_labels, num_classes)
    guesses = {
        "class_mean": prior_guess(labels, means),
        "global_mean": global_mean_image(train_images).expand_as(xb),
    }
    if predicted is not None:
        guesses["predicted_class_mean"] = prior_guess(predicted, means)
    out = {}
    for name, guess in guesses.items():
        out[name] = image_scores(xb, guess.to(xb.device), reid=reid)
    return out


def image_scores(x, x_hat, *, reid: bool = True, gallery=None, targets=None, sources=None) -> dict:
    """All §8.2 scores of estimates ``x_hat`` against originals ``x``, summarised.

    With ``gallery`` and ``targets`` (index of each estimate's original in the gallery), the
    re-identification is scored against that gallery (mixed releases: ``x`` holds each collage's
    main source, which may repeat; the gallery holds every original once). With ``sources``
    (``(N, R)`` gallery indices of every original an estimate's input drew on, e.g. the region
    sources of a collage), each estimate is also scored against the source it is closest to:
    ``any_source`` ``{"ssim": summary of the best SSIM over the sources, "reid": share whose
    nearest original in the gallery is any of their sources}``.

    Returns
    -------
    dict
        ``ssim``, ``psnr`` and (size allowing) ``ms_ssim`` summaries from :func:`summarize`, plus
        ``reid`` ``{"rate", "chance"}`` against ``gallery`` (default: the originals ``x`` themselves)
        and ``any_source`` where ``sources`` is given.
    """
    out = {
        "ssim": summarize(ssim(x, x_hat)),
        "psnr": summarize(psnr(x, x_hat)),
    }
    ms = ms_ssim(x, x_hat)
    if ms is not None:
        out["ms_ssim"] = summarize(ms)
    if sources is not None and gallery is None:
        raise ValueError("sources index into a gallery of originals: pass gallery= too")
    cand = None if sources is None else distinct_sources(sources).to(x_hat.device)
    if reid:
        r = reid_rate(x_hat, x if gallery is None else gallery, targets, candidates=cand)
        out["reid"] = {"rate": r["rate"], "chance": r["chance"]}
    if cand is not None:
        best = torch.stack([ssim(gallery[cand[:, j]], x_hat) for j in range(cand.shape[1])]).amax(dim=0)
        out["any_source"] = {"ssim": summarize(best)}
        if reid:  # the nearest original does not depend on the targets
            out["any_source"]["reid"] = r["any_rate"]
    for v in out.values():
        if isinstance(v, dict):
            for k2, val in list(v.items()):
                if isinstance(val, float) and math.isinf(val):
                    v[k2] = None
    return out
