"""Pictures for the reports, drawn with matplotlib (Agg) as inline PNG data URIs.

They come only from evidence arrays (read through `Evidence`, allow_pickle=False) and from the
grader's own numbers (`result.evaluation`); never from the student's model or outputs.
Japanese labels need a CJK font: without one, figures fall back to English labels. Class names and
groups come from the caller (the assignment's content.toml), so nothing here is about one data set.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from functools import cache
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from grader.i18n import t  # noqa: E402

# Class names, groups and colours are the assignment's (assignments/<id>/content.toml): callers pass them.
CJK_NAMES = ("Noto Sans CJK JP", "Noto Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic", "VL Gothic",
             "Hiragino Sans", "Yu Gothic", "Source Han Sans JP", "Droid Sans Fallback")
DPI = 110


@cache
def cjk_font() -> str | None:
    """A font family that can draw Japanese, registered with matplotlib; None when there is none."""
    known = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_NAMES:
        if name in known:
            return name
    if shutil.which("fc-list"):  # fonts installed after matplotlib built its cache
        try:
            listing = subprocess.run(["fc-list", ":lang=ja", "file"], capture_output=True, text=True,
                                     timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        files = sorted({line.split(":")[0].strip() for line in listing.splitlines() if line.strip()},
                       key=lambda f: ("Regular" not in f, "CJK" not in f, f))
        for path in files:
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
            names = [f.name for f in font_manager.fontManager.ttflist if f.fname == path]
            if names:
                return next((n for n in names if "JP" in n), names[0])
    return None


def label_lang(lang: str) -> str:
    """The language figure labels are written in: Japanese only when a CJK font exists."""
    return "ja" if lang != "en" and cjk_font() else "en"


def new_figure(width: float, height: float, lang: str, layout: str | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    family = [cjk_font()] if lang == "ja" and cjk_font() else []
    matplotlib.rcParams["font.family"] = [*family, "DejaVu Sans"]
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as a PNG data URI, reduced to a 256-colour palette (about a third smaller)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = io.BytesIO()
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(small, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(small.getvalue()).decode("ascii")


# ---------------------------------------------------------------- per student
def images_for_display(x: Any, limit: int = 16) -> np.ndarray | None:
    """The first `limit` images as (n, H, W) floats in 0–1, or None if they are not grey images."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "uif" or x.ndim not in (3, 4) or len(x) == 0:
        return None
    images = x[:limit].astype(np.float64)
    if images.ndim == 4:
        if images.shape[-1] != 1:
            return None
        images = images[..., 0]
    if not (4 <= images.shape[1] <= 256 and 4 <= images.shape[2] <= 256):
        return None
    images = np.nan_to_num(images, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(images.max()) if images.size else 1.0
    return np.clip(images / (255.0 if peak > 1.5 else 1.0), 0.0, 1.0)


def label_indices(y: Any, n: int, classes: int) -> list[int | None]:
    """Class numbers from one-hot or integer labels (None where unreadable)."""
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "uifb" or len(y) < n:
        return [None] * n
    if y.ndim == 2 and y.shape[1] == classes:
        return [int(i) for i in y[:n].argmax(axis=1)]
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        flat = y[:n].reshape(n)
        return [int(v) if 0 <= v < classes and float(v).is_integer() else None for v in flat]
    return [None] * n


def mosaic(images: np.ndarray, columns: int = 4, gap: int = 2, band: int = 0) -> np.ndarray:
    """Tiles (n, H, W) into one grey picture, `columns` wide: white gaps, and a white band above each row."""
    rows = max(1, -(-len(images) // columns))
    height, width = images.shape[1:3]
    canvas = np.ones((rows * (height + band + gap), columns * (width + gap) - gap))
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = r * (height + band + gap) + band, c * (width + gap)
        canvas[top: top + height, left: left + width] = image
    return canvas


def batch_grid(x: Any, x_orig: Any, y_orig: Any, lang: str, names: Sequence[str] = ()) -> str | None:
    """The first batch as a 4×4 grid, beside the 4×4 grid of the images it came from (as on the slides),
    each image labelled with `names[label]` when `names` are given."""
    augmented, original = images_for_display(x), images_for_display(x_orig)
    if augmented is None:
        return None
    n = len(augmented) if original is None else min(len(augmented), len(original))
    labels = label_indices(y_orig, n, len(names)) if names else [None] * n
    panels = [(t("figure.originals", lang), original), (t("figure.augmented", lang), augmented)]
    panels = [(title, images[:n]) for title, images in panels if images is not None]
    fig = new_figure(3.3 * len(panels), 3.7, lang, layout=None)  # fixed margins: constrained layout is slow here
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=0.93, wspace=0.08)
    for ax, (title, images) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        height, width = images.shape[1:3]
        band = max(1, round(height / 3)) if any(label is not None for label in labels) else 0
        ax.imshow(mosaic(images, band=band), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        for i, label in enumerate(labels):
            if label is not None:
                r, c = divmod(i, 4)
                ax.text(c * (width + 2) + width / 2, r * (height + band + 2) + band - 0.8, names[label],
                        fontsize=6, ha="center", va="bottom", color="#222")
    return to_data_uri(fig)


def learning_curves(history: dict[str, Any], lang: str) -> str | None:
    """Loss and accuracy per epoch, training and validation, from the fit_end event."""
    def series(key: str) -> list[float] | None:
        values = history.get(key)
        if not isinstance(values, list) or not values or len(values) > 10_000:
            return None
        try:
            return [float(v) for v in values]
        except (TypeError, ValueError):
            return None

    panels = [("loss", t("figure.loss", lang)), ("accuracy", t("figure.accuracy", lang))]
    if not any(series(key) for key, _ in panels):
        return None
    fig = new_figure(7.2, 2.8, lang)
    for ax, (key, title) in zip(fig.subplots(1, 2), panels):
        for prefix, name, style in (("", t("figure.training", lang), "o-"), ("val_", t("figure.validation", lang), "s--")):
            values = series(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=name, markersize=4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(t("figure.epoch", lang))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    return to_data_uri(fig)


def valid_confusion(confusion: Any, classes: int) -> np.ndarray | None:
    try:
        matrix = np.asarray(confusion, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    return matrix if matrix.shape == (classes, classes) and (matrix >= 0).all() and matrix.sum() > 0 else None


def confusion_matrix(confusion: Any, lang: str, names: Sequence[str]) -> str | None:
    """Rows = true class, columns = predicted; colour = share of the row, numbers = counts."""
    matrix = valid_confusion(confusion, len(names))
    if matrix is None:
        return None
    classes = len(names)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = new_figure(5.6, 5.0, lang)
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=6.5,
                    color="white" if share[row, col] > 0.55 else "black")
    ax.set_xticks(range(classes), names, rotation=60, ha="right", fontsize=7.5)
    ax.set_yticks(range(classes), names, fontsize=7.5)
    ax.set_xlabel(t("figure.predicted_class", lang))
    ax.set_ylabel(t("figure.true_class", lang))
    return to_data_uri(fig)


def per_class_accuracy(per_class: Sequence[float], lang: str, names: Sequence[str],
                       groups: Sequence[tuple[str, str, Sequence[int]]] = ()) -> str | None:
    """Bars per class, coloured by the groups the slides talk about: (legend, colour, members) each
    (課題8: clothes are symmetric, shoes always face left, bags)."""
    if not isinstance(per_class, (list, tuple)) or len(per_class) != len(names):
        return None
    fig = new_figure(5.6, 4.0, lang)
    ax = fig.subplots()
    rows = range(len(names))
    colour = {member: color for _, color, members in groups for member in members}
    ax.barh(rows, [float(v) for v in per_class], color=[colour.get(i, "#777777") for i in rows])
    for legend, color, _ in groups:
        ax.barh([0], [0], color=color, label=legend)
    ax.set_yticks(rows, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(t("figure.accuracy_per_class", lang))
    ax.grid(axis="x", alpha=0.3)
    if groups:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(3, len(groups)), fontsize=7,
                   frameon=False)
    return to_data_uri(fig)


# ---------------------------------------------------------------- class page
def score_histogram(scores: Sequence[int], max_score: int, lang: str) -> str | None:
    if not scores:
        return None
    fig = new_figure(5.0, 2.8, lang)
    ax = fig.subplots()
    step = 5 if max_score <= 100 else max(1, max_score // 20)
    ax.hist(scores, bins=np.arange(0, max_score + step + 1, step) - step / 2, color="#3b6ea8", edgecolor="white")
    ax.set_xlim(-step, max_score + step)
    ax.set_xlabel(t("figure.score", lang))
    ax.set_ylabel(t("figure.students", lang))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    return to_data_uri(fig)


def accuracy_distribution(points: Sequence[tuple[str, float]], threshold: float | None,
                          reference: float | None, lang: str) -> str | None:
    """Each student's trusted test accuracy against the threshold (a dot per student, or a histogram)."""
    if not points:
        return None
    fig = new_figure(6.0, max(2.0, 0.9 + 0.26 * len(points)) if len(points) <= 30 else 2.8, lang)
    ax = fig.subplots()
    below = [a < threshold if threshold is not None else False for _, a in points]
    if len(points) <= 30:
        ordered = sorted(zip(points, below), key=lambda item: item[0][1])
        ax.scatter([a for (_, a), _ in ordered], range(len(ordered)),
                   c=["#b00020" if low else "#17692c" for _, low in ordered], zorder=3)
        ax.set_yticks(range(len(ordered)), [s for (s, _), _ in ordered], fontsize=7.5)
        ax.set_ylim(-0.7, len(ordered) - 0.3)
    else:
        ax.hist([a for _, a in points], bins=20, range=(0, 1), color="#3b6ea8", edgecolor="white")
        ax.set_ylabel(t("figure.students", lang))
    if threshold is not None:
        ax.axvline(threshold, color="#b00020", linestyle="--", label=t("figure.threshold", lang, value=threshold))
    if reference is not None:
        ax.axvline(reference, color="black", linestyle=":", label=t("figure.reference", lang, value=reference))
    ax.set_xlim(0, 1)
    ax.set_xlabel(t("figure.test_accuracy", lang))
    ax.grid(axis="x", alpha=0.3)
    if threshold is not None or reference is not None:
        ax.legend(fontsize=7, loc="upper left")
    return to_data_uri(fig)
