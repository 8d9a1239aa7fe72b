r"""``samples.png``: what the models generate and how they reconstruct test images, one
row per finished run, drawn from each run's best checkpoint (:func:`sample_images`,
:func:`plot_samples`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaeflow.report.find import Sweep
from vaeflow.report.run import Run
from vaeflow.report.tables import _f, _unfinished_note
from vaeflow.report.trained import each_trained

if TYPE_CHECKING:  # torch and the model are imported where the samples are drawn
    import numpy as np
    from torch import Tensor

    from vaeflow.data import Split
    from vaeflow.model import VAE

__all__ = ["SampleImages", "sample_images", "plot_samples", "SAMPLES", "PAIRS", "SAMPLES_SEED"]

#: what each row of ``samples.png`` shows: prior draws, and test images with their
#: reconstructions; the seed fixes the draws, the test images and the posterior noise
SAMPLES, PAIRS, SAMPLES_SEED = 16, 8, 0

# The layout of samples.png in pixels (figures are saved at _DPI): per row, the label, the
# strip of samples and the strip of pairs, each strip 2 lines of _COLS tiles of _TILE px.
_DPI = 100
_MARGIN, _LABEL_W, _GAP_LABEL, _GAP_STRIPS, _ROW_GAP = 10, 210, 14, 20, 12
_COLS, _PAD, _TILE = 8, 2, 56  # 8 * (56 + 2) + 2 = 466 px per strip: 1,196 px in all
_HEAD_H, _FOOT_H = 66, 56
_WRAP = 32  # characters of 8.5 pt text in the label column


@dataclass
class SampleImages:
    r"""What one row of ``samples.png`` shows: ``[n, C, H, W]`` tensors in ``[0, 1]`` on
    the CPU.

    Attributes:
        samples: the mean images ``E[x|z]`` of prior draws ``z ~ p(z)``.
        originals: test images.
        reconstructions: the mean images of one draw ``z ~ q(z|x)`` per test image.
        caption: what the images are (the likelihood's :attr:`mean_caption`).
    """

    samples: Tensor
    originals: Tensor
    reconstructions: Tensor
    caption: str = "means E[x|z]"


def sample_images(
    model: VAE, test: Split, samples: int = SAMPLES, pairs: int = PAIRS, seed: int = SAMPLES_SEED
) -> SampleImages:
    r"""Decodes ``samples`` prior draws and reconstructs ``pairs`` test images with ``model``
        (a :class:`~vaeflow.model.VAE` in eval mode).

        Everything random is seeded, so that rows compare: every model with the same latent
        size and the standard normal prior decodes the same draws ``z`` (a learned prior draws
    from the same generator), every model of the same
        dataset reconstructs the same test images, the seeded subset of
        :func:`~vaeflow.data.seeded_subset` in file order (test files can be sorted by class),
        with the same counter-based posterior noise per image.

        Arguments:
            model: the VAE.
            test: its test split (:class:`~vaeflow.data.base.Split`).
            samples: prior draws to decode.
            pairs: test images to reconstruct.
            seed: seeds the draws, the choice of test images and the posterior noise.
    """
    import torch

    from vaeflow.data import binarize_fixed, seeded_subset
    from vaeflow.randomness import example_noise

    param = next(model.parameters())
    ids = seeded_subset(len(test), pairs, seed)
    x = test.images[ids]
    if test.dynamic:  # a static image to compare with: binarize once, seeded
        x = binarize_fixed(x, seed)
    eps = example_noise(ids, 0, 1, model.latent_dim, seed, device=param.device, dtype=param.dtype)
    with torch.inference_mode():
        means = model.sample_images(
            samples, torch.Generator(param.device).manual_seed(seed)
        )  # the prior's draws
        reconstructions = model.reconstruct(x.to(param.device, param.dtype), eps)
    return SampleImages(
        means.clamp(0, 1).cpu(),
        x.clamp(0, 1).cpu(),
        reconstructions.clamp(0, 1).cpu(),
        model.likelihood.mean_caption,
    )


def _run_samples(runs: Sequence[Run], seed: int) -> list[tuple[Run, SampleImages]]:
    r"""The images of each finished run (:func:`~vaeflow.report.trained.each_trained`); a
    run that cannot be loaded or drawn gets a ``samples_skipped`` note instead."""
    for run in runs:
        run.samples_skipped = ""

    def skip(run: Run, why: str) -> None:
        run.samples_skipped = why

    return each_trained(
        runs, lambda trained: sample_images(trained.model, trained.data.test, seed=seed), skip
    )


def _strip(images: Tensor, cols: int) -> np.ndarray:
    r"""``images`` as a grid of ``cols`` columns of tiles of about ``_TILE`` pixels (an
    integer nearest-neighbour upscaling, so pixels stay sharp); ``[H, W, 3]`` NumPy array."""
    from torchvision.utils import make_grid

    scale = max(1, _TILE // max(images.shape[-2:]))
    big = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(big, nrow=cols, padding=_PAD, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def _pairs_strip(images: SampleImages) -> np.ndarray:
    r"""The test images on the first line, each above its reconstruction."""
    import torch

    return _strip(torch.cat([images.originals, images.reconstructions]), len(images.originals))


def _samples_footer(
    runs: Sequence[Run],
    sweeps: Sequence[Sweep],
    seed: int,
    captions: Sequence[str] = ("Bernoulli means E[x|z]",),
) -> str:
    r"""What the images are (``captions``: each likelihood's, never binarized), and which
    runs are not shown and why."""
    lines = [
        f"images: {'; '.join(captions)} of the decoder; a reconstruction decodes one z ~ q(z|x); seed {seed}",
        "samples decode z ~ p(z) of each row's prior (the standard normal unless the row names another)",
    ]
    note = _unfinished_note(runs, sweeps).removesuffix(" (see the table)")
    skipped = sum(1 for r in runs if r.samples_skipped)
    if skipped:
        note = (
            f"{note}, " if note else "not shown: "
        ) + f"{skipped} whose checkpoint or data could not be loaded"
    if note:
        lines.append(f"{note} (see results.md)")
    return "\n".join(lines)


def _label_lines(run: Run, height: float, datasets: int) -> list[tuple[str, float, str, str]]:
    r"""The label of a row as ``(text, font size, weight, colour)`` lines that fit in
    ``height`` pixels: family and depth, the setting (wrapped), seed and test NLL, and the
    run's name (wrapped at its commas) in what room is left."""
    import textwrap

    head = run.family + (f", depth {run.depth}" if run.depth else "")
    prior = str(run.config.get("prior.name", "standard_normal"))
    meta = " · ".join(
        [
            *([run.dataset] if datasets > 1 else []),
            *([f"prior {prior}"] if prior != "standard_normal" else []),
            f"seed {run.seed}",
            f"test NLL {_f(run.nll)}",
        ]
    )
    room = max(1, int((height - _line_px(10.5) - _line_px(8.5)) // _line_px(8.5)))
    setting = _fit(textwrap.wrap(run.setting, _WRAP), max(1, room - 1))
    name = _fit(_wrap_name(run.label or run.name, _WRAP), min(2, room - len(setting)))
    return [
        (head, 10.5, "bold", "black"),
        *((line, 8.5, "normal", "#222222") for line in setting),
        (meta, 8.5, "normal", "#444444"),
        *((line, 8, "normal", "#777777") for line in name),
    ]


def _fit(lines: list[str], n: int) -> list[str]:
    r"""The first ``n`` lines, the last of them ending in an ellipsis if some are left out."""
    if len(lines) <= n:
        return lines
    if n <= 0:
        return []
    return [*lines[: n - 1], lines[n - 1][: _WRAP - 1] + "…"]


def _wrap_name(name: str, width: int) -> list[str]:
    r"""A run name (``3_posterior.depth=8,posterior=planar``) in lines of at most ``width``
    characters, broken after its commas and slashes where it can be."""
    parts = re.findall(r"[^,/]*[,/]?", name)
    lines = [""]
    for part in filter(None, parts):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return [line[i : i + width] for line in lines for i in range(0, len(line), width)]


def _line_px(points: float) -> float:
    return points * _DPI / 72 * 1.3


def plot_samples(
    runs: Sequence[Run],
    path: str | Path,
    sweeps: Sequence[Sweep] = (),
    title: str | None = None,
    seed: int = SAMPLES_SEED,
) -> Path:
    r"""What the models generate, side by side: one row per finished run, in the report's
    order, with (left) the mean images of the same :data:`SAMPLES` prior draws in every row
    and (right) :data:`PAIRS` test images above their reconstructions (see
    :func:`sample_images`).

    Each run's best checkpoint is loaded as ``vaeflow eval`` loads it
    (:func:`~vaeflow.evaluate.load_trained`), on the CPU with one thread. A run that
    cannot be loaded is left out and gets a ``samples_skipped`` note (:func:`notes`).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    rows = _run_samples(runs, seed)
    strips = [(run, _strip(images.samples, _COLS), _pairs_strip(images)) for run, images in rows]
    sample_w = max((s.shape[1] for _, s, _ in strips), default=8 * (_TILE + _PAD) + _PAD)
    pairs_w = max((p.shape[1] for *_, p in strips), default=sample_w)
    heights = [max(s.shape[0], p.shape[0]) for _, s, p in strips]
    x_samples = _MARGIN + _LABEL_W + _GAP_LABEL
    x_pairs = x_samples + sample_w + _GAP_STRIPS
    width = x_pairs + pairs_w + _MARGIN
    height = _HEAD_H + sum(h + _ROW_GAP for h in heights) + (_FOOT_H if strips else 60 + _FOOT_H)
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)

    def text(x: float, y: float, s: str, **kwargs: Any) -> None:  # (x, y): pixels from the top left
        fig.text(x / width, 1 - y / height, s, va="top", ha="left", **kwargs)

    def image(x: float, y: float, pixels: np.ndarray) -> None:
        h, w = pixels.shape[:2]
        ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))
        ax.imshow(pixels, interpolation="nearest", aspect="auto")
        ax.set_axis_off()

    datasets = sorted({r.dataset for r, *_ in strips}) or sorted({r.dataset for r in runs})
    heading = title or f"{', '.join(datasets)}: samples and reconstructions (best checkpoint of each run)"
    text(_MARGIN, 10, heading, fontsize=13, fontweight="bold")
    text(
        x_samples,
        44,
        f"{SAMPLES} samples z ~ p(z), one seeded generator",
        fontsize=9.5,
    )
    text(x_pairs, 44, f"{PAIRS} test images (top), reconstructions (bottom)", fontsize=9.5)
    y = _HEAD_H
    for (run, samples, pairs), h in zip(strips, heights):
        line_y = y
        for line, size, weight, color in _label_lines(run, h, len(datasets)):
            text(_MARGIN, line_y, line, fontsize=size, fontweight=weight, color=color)
            line_y += _line_px(size)
        image(x_samples, y, samples)
        image(x_pairs, y, pairs)
        y += h + _ROW_GAP
        if y < height - _FOOT_H - _ROW_GAP:  # a rule between rows
            rule = 1 - (y - _ROW_GAP / 2) / height
            fig.add_artist(
                Line2D([_MARGIN / width, 1 - _MARGIN / width], [rule, rule], lw=0.6, color="#cccccc")
            )
    if not strips:
        empty = "no finished run" if not any(r.finished for r in runs) else "no run could be loaded"
        text(_MARGIN, y + 10, empty, fontsize=10, color="#444444")
        y += 60
    captions = sorted({images.caption for _, images in rows}) or ["means E[x|z]"]
    text(
        _MARGIN,
        y + 4,
        _samples_footer(runs, sweeps, seed, captions),
        fontsize=8.5,
        color="#444444",
        linespacing=1.4,
    )
    fig.savefig(path, dpi=_DPI)
    return path
