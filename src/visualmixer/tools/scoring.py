"""VFE of many image files: read them in chunks, score same-size images in one batched call.

The library side of ``visualmixer vfe``; usable from Python as well:

>>> import pathlib, tempfile, torch
>>> from visualmixer.tools.imageio import write_png
>>> from visualmixer.tools.scoring import image_files, score_files
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> noise = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
>>> _ = write_png(folder / "noise.png", noise), (folder / "notes.png").write_text("not an image")
>>> scores = score_files(image_files([folder]))      # a folder is searched recursively
>>> [(s.width, s.height, s.vfe) for s in scores.scores], scores.summary()["failed"]
([(64, 64, 0.997)], 1)
>>> scores.failed[0][1]                              # unreadable files are listed, not fatal
'not a recognised image format (Pillow cannot identify it)'
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from visualmixer.core.vfe import vfe
from visualmixer.tools import imageio as vio
from visualmixer.tools.folders import list_images
from visualmixer.tools.progress import progress

__all__ = ["FileScore", "FileScores", "image_files", "score_files"]


@dataclass(frozen=True)
class FileScore:
    """The VFE of one image file.

    Attributes
    ----------
    path : str
    width, height, channels : int
        Of the decoded image (``channels`` in {1, 3}).
    vfe : float
        Rounded to 3 decimals.
    """

    path: str
    width: int
    height: int
    channels: int
    vfe: float

    def as_dict(self) -> dict:
        """``{"path", "height", "width", "channels", "vfe"}`` (the keys of the CLI's JSON and CSV)."""
        return {"path": self.path, "height": self.height, "width": self.width,
                "channels": self.channels, "vfe": self.vfe}


@dataclass
class FileScores:
    """Scores of the readable files, in input order, and the unreadable ones with their reason."""

    scores: list[FileScore] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict:
        """``count``, ``failed``, ``mean``, ``median``, ``min``, ``max`` (None without scores)."""
        values = [s.vfe for s in self.scores]
        return {
            "count": len(values),
            "failed": len(self.failed),
            "mean": round(statistics.fmean(values), 3) if values else None,
            "median": round(statistics.median(values), 3) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        }


def image_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Expand ``paths`` into image files: files as given, folders searched recursively (sorted).

    Raises
    ------
    FileNotFoundError
        A path does not exist (the message names it).
    """
    files: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            ids, _ignored = list_images(path)
            files += [str(path / i) for i in ids]
        elif path.exists():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"{raw} does not exist")
    return files


def score_files(
    files: Sequence[str | os.PathLike],
    *,
    window: int | None = None,
    max_pixels: int | None = None,
    chunk: int = 32,
    show_progress: bool = False,
) -> FileScores:
    """VFE of each image file, same-size images of a chunk scored in one :func:`vfe` call.

    Parameters
    ----------
    files : sequence of path-like
        Image files (see :func:`image_files` for folders).
    window : int, optional
        VFE window side in pixels (default: each image's default region side).
    max_pixels : int, optional
        Decompression-bomb limit on each file's declared width × height (default: Pillow's);
        larger files are listed in ``failed``.
    chunk : int, default 32
        Files held in memory at once.
    show_progress : bool, default False
        A progress bar on a terminal (:func:`visualmixer.tools.progress.progress`).

    Returns
    -------
    FileScores
        Unreadable files are in ``failed`` with a one-line reason; they do not stop the others.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    result = FileScores()
    bar = progress(total=len(files), enabled=show_progress and len(files) > 1, desc="vfe", unit="img")
    with bar:
        for start in range(0, len(files), chunk):
            part = files[start : start + chunk]
            loaded: list[tuple[str, torch.Tensor]] = []
            for path in part:
                try:
                    loaded.append((str(path), vio.read_image(path, max_pixels=max_pixels)))
                except vio.ImageReadError as exc:
                    result.failed.append((str(path), str(exc)))
            result.scores += _score_chunk(loaded, window)
            bar.update(len(part))
    return result


def _score_chunk(loaded: list[tuple[str, torch.Tensor]], window: int | None) -> list[FileScore]:
    """One :func:`vfe` call per distinct image shape; scores back in input order."""
    groups: dict[tuple, list[int]] = {}
    for n, (_path, px) in enumerate(loaded):
        groups.setdefault(tuple(px.shape), []).append(n)
    values: dict[int, float] = {}
    for members in groups.values():
        batch = torch.stack([loaded[n][1] for n in members])
        values.update(zip(members, vfe(batch, window=window).tolist(), strict=True))
    return [
        FileScore(path, width=int(px.shape[2]), height=int(px.shape[1]), channels=int(px.shape[0]),
                  vfe=round(values[n], 3))
        for n, (path, px) in enumerate(loaded)
    ]
