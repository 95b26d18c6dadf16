"""A6 face detection: does an off-the-shelf face detector still find the faces?

Two detectors that work offline (their weights ship inside their wheels):

- ``"haar"``: OpenCV's frontal-face Haar cascade, shipped in ``opencv-python-headless>=4.10,<5``
  (``pip install 'visualmixer[cv]'``).
- ``"mtcnn"``: facenet-pytorch's MTCNN, whose weights ship inside its wheel
  (``pip install 'visualmixer[faces]' && pip install --no-deps facenet-pytorch==2.6.0``).

Both are optional; :func:`haar_available` / :func:`mtcnn_available` say whether they can run, and
:func:`detect_faces` raises an ``ImportError`` with the install command otherwise.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from visualmixer.core.imageops import add_batch_axis, to_uint8_hwc

__all__ = ["detect_faces", "haar_available", "mtcnn_available"]


def haar_available() -> bool:
    """True when OpenCV with its bundled Haar cascades is importable."""
    try:
        _haar_cascade()
    except ImportError:
        return False
    return True


def mtcnn_available() -> bool:
    """True when facenet-pytorch's MTCNN can be imported."""
    try:
        _mtcnn("cpu")
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=2)
def _haar_cascade(name: str = "haarcascade_frontalface_default.xml"):
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            "Haar face detection needs OpenCV: pip install -c constraints.txt 'visualmixer[cv]' "
            "(opencv-python-headless>=4.10,<5; 5.0 ships no cascades)"
        ) from exc
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not base:
        raise ImportError("this OpenCV build ships no Haar cascades (need opencv-python-headless<5)")
    cascade = cv2.CascadeClassifier(base + name)
    if cascade.empty():
        raise ImportError(f"could not load the Haar cascade {base + name}")
    return cascade


@functools.lru_cache(maxsize=2)
def _mtcnn(device: str):
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise ImportError(
            "MTCNN face detection needs facenet-pytorch: pip install -c constraints.txt "
            "'visualmixer[faces]' && pip install --no-deps facenet-pytorch==2.6.0"
        ) from exc
    return MTCNN(keep_all=True, device=device)


def detect_faces(
    images,
    *,
    detector: str = "haar",
    min_size: int | None = None,
    scale_factor: float = 1.1,
    min_neighbors: int = 5,
    threshold: float = 0.9,
    device: str = "cpu",
) -> list[np.ndarray]:
    """Detect faces in every image; returns one ``(k, 4)`` array of ``x0, y0, x1, y1`` boxes per image.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` or ``(C, H, W)``, uint8 or float in [0, 1], grey or colour.
    detector : {"haar", "mtcnn"}
        Which detector to use.
    min_size : int, optional
        Smallest face side in pixels (Haar; default ``max(12, min(H, W) // 8)``).
    scale_factor, min_neighbors : float, int
        Haar cascade parameters (OpenCV's ``detectMultiScale``).
    threshold : float
        MTCNN face probability above which a box counts.
    device : str
        MTCNN device.

    Returns
    -------
    list of numpy.ndarray
        ``N`` arrays of shape ``(k, 4)``, float32.
    """
    x, _ = add_batch_axis(images, "images")
    if detector == "haar":
        import cv2

        cascade = _haar_cascade()
        h, w = x.shape[2:]
        ms = max(12, min(h, w) // 8) if min_size is None else int(min_size)
        out = []
        for img in x:
            grey = cv2.cvtColor(to_uint8_hwc(img), cv2.COLOR_RGB2GRAY)
            grey = cv2.equalizeHist(grey)
            found = cascade.detectMultiScale(
                grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(ms, ms)
            )
            boxes = np.asarray(found, dtype=np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            out.append(boxes)
        return out
    if detector == "mtcnn":
        model = _mtcnn(device)
        batch = [to_uint8_hwc(img) for img in x]
        out = []
        with torch.no_grad():
            for arr in batch:  # MTCNN batches only equal-size images; keep it simple and robust
                boxes, probs = model.detect(arr)
                if boxes is None:
                    out.append(np.zeros((0, 4), dtype=np.float32))
                else:
                    keep = np.asarray(probs) >= threshold
                    out.append(np.asarray(boxes, dtype=np.float32)[keep].reshape(-1, 4))
        return out
    raise ValueError(f"detector must be 'haar' or 'mtcnn', got {detector!r}")
