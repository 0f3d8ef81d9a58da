"""Timeline pictures of a localization (`plot_timeline`) and of a CML query (`plot_query`).

Drawn on a bare matplotlib Figure with the Agg canvas: no pyplot, no global backend switch,
safe on headless machines and inside other programs that use matplotlib.

Timeline of a video (x: seconds, m:ss past two minutes):
  * top panel: the combined event relevance p_t (thick black), its audio part p_t^A (blue)
    and visual part p_t^V (orange), per second as steps; the 0.5 line that separates event
    from background (DAM's rule); each merged event interval shaded in its label's colour,
    with the label and score written above it where there is room. A model without
    relevance (AV_att) shows the probability of the predicted label instead.
  * bottom band: the label of every second as a coloured strip (background light grey),
    names written inside runs wide enough to hold them; a legend maps colours to labels.
Labels are thinned by the room they need, so a 3-s clip and a 10-min video both read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator

from ...core.atomic import atomic_path
from ...core.errors import shown

if TYPE_CHECKING:  # import cycles: localize and query import this module's users
    from .outputs import VideoLocalization
    from .query import QueryResult

BACKGROUND_COLOUR = "#e3e3e3"
AUDIO_COLOUR = "#1f5fbf"
VISUAL_COLOUR = "#d9480f"
FIG_WIDTH_IN = 13.0
CHAR_WIDTH_IN = 0.075  # about one character at font size 8.5


def label_colours(classes: Sequence[str], background: str = "background") -> dict[str, str]:
    """A fixed pastel colour per class, by its index in the checkpoint's class list (one
    class has one colour in every picture of a model; hues step by the golden angle, so
    neighbours differ for any number of classes); background light grey. Pastels keep the
    strong curve colours readable on top of them."""
    from matplotlib.colors import hsv_to_rgb

    colours = {}
    for i, name in enumerate(classes):
        hue = (0.58 + i * 0.381966) % 1.0
        rgb = hsv_to_rgb((hue, 0.42 if i % 2 == 0 else 0.55, 0.97 if i % 2 == 0 else 0.88))
        colours[name] = "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb)
    colours[background] = BACKGROUND_COLOUR
    return colours


TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def _time_axis(ax, duration_s: float) -> None:
    ax.set_xlim(0, max(duration_s, 1.0))
    step = next((s for s in TICK_STEPS_S if duration_s / s <= 15), TICK_STEPS_S[-1])
    ax.xaxis.set_major_locator(MultipleLocator(step))
    if duration_s > 120:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(x) // 60}:{int(x) % 60:02d}"))
        ax.set_xlabel("time (min:s)")
    else:
        ax.set_xlabel("time (s)")


def _steps(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-second values -> x, y for a step curve that holds each value over its second."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y) + 1, dtype=np.float64)
    return x, np.append(y, y[-1:])


def _fits(text: str, width_s: float, seconds_per_inch: float) -> bool:
    return width_s / seconds_per_inch >= len(text) * CHAR_WIDTH_IN + 0.1


def _runs(labels: Sequence[str]) -> list[tuple[int, int, str]]:
    runs, t = [], 0
    while t < len(labels):
        end = t + 1
        while end < len(labels) and labels[end] == labels[t]:
            end += 1
        runs.append((t, end, labels[t]))
        t = end
    return runs


def _save(fig: Figure, path: str | os.PathLike) -> None:
    """Atomically, in the format of the file's suffix (.png, .svg, .pdf...; PNG for any other)."""
    canvas = FigureCanvasAgg(fig)
    fmt = Path(path).suffix[1:].lower()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=fmt if fmt in canvas.get_supported_filetypes() else "png")


def plot_timeline(result: VideoLocalization, path: str | os.PathLike) -> None:
    """PNG timeline of one localized video (see the module docstring)."""
    if not result.ok:
        raise ValueError(f"{result.video}: nothing to plot ({result.error})")
    segs = result.segments
    T = len(segs)
    info = result.model
    classes = list(info.classes) if info is not None else sorted({s.label for s in segs} - {"background"})
    colours = label_colours(classes)
    labels = [s.label for s in segs]
    has_relevance = T > 0 and segs[0].relevance is not None
    duration = float(T)

    fig = Figure(figsize=(FIG_WIDTH_IN, 5.2))
    grid = fig.add_gridspec(2, 1, height_ratios=[5, 1], hspace=0.08, left=0.06, right=0.83, top=0.83, bottom=0.12)
    ax = fig.add_subplot(grid[0])
    band = fig.add_subplot(grid[1], sharex=ax)
    axis_in = FIG_WIDTH_IN * (0.83 - 0.06)
    s_per_in = max(duration, 1.0) / axis_in

    # merged intervals, shaded, labelled above the curves on two staggered rows; a label
    # that would overlap both rows' previous ones is left out (the band and legend keep it)
    row_end = [-np.inf, -np.inf]
    for e in result.events:
        colour = colours.get(e.label, "#999999")
        ax.axvspan(e.start_s, e.end_s, color=colour, alpha=0.45, lw=0)
        text = f"{e.label} {e.score:.2f}"
        half = (len(text) * CHAR_WIDTH_IN + 0.1) * s_per_in / 2
        centre = min(max((e.start_s + e.end_s) / 2, half), max(duration - half, half))  # inside the axis
        for row in (0, 1):
            if centre - half >= row_end[row]:
                ax.text(
                    centre,
                    1.03 + 0.075 * row,
                    text,
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=8.5,
                    clip_on=False,
                    bbox=dict(boxstyle="round,pad=0.2", fc=colour, lw=0),
                )
                row_end[row] = centre + half
                break

    # curves
    dense = T > 90  # thin, lighter parts so the combined curve stays on top
    if has_relevance:
        lw, alpha = (0.8, 0.55) if dense else (1.4, 0.9)
        x, y = _steps([s.audio_relevance for s in segs])
        ax.plot(x, y, drawstyle="steps-post", color=AUDIO_COLOUR, lw=lw, alpha=alpha, label="audio relevance $p^A_t$")
        x, y = _steps([s.visual_relevance for s in segs])
        ax.plot(x, y, drawstyle="steps-post", color=VISUAL_COLOUR, lw=lw, alpha=alpha, label="visual relevance $p^V_t$")
        x, y = _steps([s.relevance for s in segs])
        ax.plot(x, y, drawstyle="steps-post", color="black", lw=1.6 if dense else 2.2, label="event relevance $p_t$")
        ax.axhline(0.5, color="#c0392b", ls="--", lw=1.1, label="threshold 0.5: event above")
        ax.set_ylabel("relevance")
    else:
        x, y = _steps([s.probability for s in segs])
        ax.plot(x, y, drawstyle="steps-post", color="black", lw=2.0, label="probability of the label")
        ax.set_ylabel("probability")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)

    # label band
    for start, end, label in _runs(labels):
        band.broken_barh([(start, end - start)], (0, 1), color=colours.get(label, "#999999"), lw=0)
        if label != "background" and _fits(label, end - start, s_per_in):
            band.text((start + end) / 2, 0.5, label, ha="center", va="center", fontsize=8.5)
    band.set_ylim(0, 1)
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    _time_axis(band, duration)
    present = [c for c in classes if c in set(labels)] + ["background"]
    band.legend(
        handles=[Patch(color=colours[c], label=c) for c in present],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.25),
        fontsize=8.5,
        frameon=False,
        title="label per second",
        title_fontsize=8.5,
    )

    name = shown(os.path.basename(result.video))
    n = len(result.events)
    model = f"{info.task}/{info.model}, window {info.window} s, stride {info.stride} s" if info is not None else ""
    fig.text(
        0.06,
        0.955,
        f"{name}: {n} event{'s' if n != 1 else ''} in {result.duration_s:.1f} s",
        ha="left",
        va="center",
        fontsize=12,
        fontweight="bold",
    )
    fig.text(0.83, 0.955, model, fontsize=8.5, color="#555555", ha="right", va="center")
    _save(fig, path)


def plot_query(result: QueryResult, path: str | os.PathLike) -> None:
    """PNG of a CML query: the target's per-second score (relevance to the query, or a
    distance), the best window shaded, and, when the query was cut from the target itself,
    the query's own seconds hatched."""
    secs = result.seconds
    T = len(secs)
    duration = float(T)
    fig = Figure(figsize=(FIG_WIDTH_IN, 4.2))
    ax = fig.add_axes([0.095, 0.15, 0.735, 0.66])

    best = result.best
    ax.axvspan(
        best.start_s, best.end_s, color="#2ca02c", alpha=0.22, lw=0, label=f"best {best.end_s - best.start_s}-s window"
    )
    ax.text(
        (best.start_s + best.end_s) / 2,
        1.02,
        f"best match {best.start_s}-{best.end_s} s",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        fontsize=8.5,
        clip_on=False,
        bbox=dict(boxstyle="round,pad=0.2", fc="#2ca02c", alpha=0.3, lw=0),
    )
    if _same_file(result.query, result.target):
        ax.axvspan(
            result.query_start_s,
            result.query_end_s,
            fill=False,
            hatch="//",
            edgecolor="#888888",
            lw=0,
            label="the query's own seconds",
        )
    x, y = _steps([s.score for s in secs])
    ax.plot(x, y, drawstyle="steps-post", color="black", lw=1.6 if T > 90 else 2.2, label=result.score_label)
    if result.score_kind == "relevance":
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(0.5, color="#c0392b", ls="--", lw=1.0, label="0.5")
    else:  # distances: the data's own range, so the dips read
        lo, hi = float(np.min(y)), float(np.max(y))
        pad = max(hi - lo, 1e-6 * max(abs(hi), 1.0)) * 0.1
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(result.score_kind.replace("-", " ") + ("" if result.higher_is_better else "\n(lower = closer)"))
    ax.grid(axis="y", alpha=0.3)
    _time_axis(ax, duration)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
    q = shown(os.path.basename(result.query))
    fig.text(
        0.095,
        0.94,
        f"{result.direction.upper()}: {result.query_modality} of {q} ({result.query_start_s}-"
        f"{result.query_end_s} s) -> {result.target_modality} of {shown(os.path.basename(result.target))}",
        ha="left",
        va="center",
        fontsize=12,
        fontweight="bold",
    )
    model = result.model
    fig.text(
        0.83,
        0.94,
        f"{model.get('task', '')}/{model.get('model', '')}, {result.score_kind}; best window score {best.score:.3f}",
        fontsize=8.5,
        color="#555555",
        ha="right",
        va="center",
    )
    _save(fig, path)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
