"""The HTML report: each video beside its event timeline, in one self-contained page.

    write_localization_report(results, "report.html")   # `avel localize --html`, `avel demo`
    write_query_report(result, "match.html")            # `avel cml --html`

One file, no network: the page's CSS and JavaScript (`report_assets/`, shipped in the
wheel) are inlined at build time; no CDN, no build step. Videos are referenced by their path
relative to the page's folder (percent-encoded), never copied or inlined, so the page works
opened from disk (file://) as long as it stays beside them.

The data is the JSON of `--json`, embedded once, in a `<script type="application/json"
id="avel-data">` block, wrapped in an envelope that says what only the page needs:

    {"report": "localization",               localization | cml
     "media": [{"src": "clips/dog.mp4", "element": "video"}, ...],   one per result (cml: {"query": .., "target": ..})
     "colours": {"Bark": "#8fb8f7", ..., "background": "#e3e3e3"},  the PNG timelines' label colours
     "data": [...]}                          exactly `VideoLocalization.to_dict()` of each video
                                             (cml: `QueryResult.to_dict()`): the README's schema

The page's script draws from that data and computes nothing it does not say (the index's
event counts and top labels are the JSON's `summary`; the threshold is `model.threshold`;
the CML score scale is `score_range`). What the page shows:
  * localization: an index (file, duration, events found, top label; each row links to its
    video's section); per video an HTML5 player and under it an SVG timeline: the events as
    labelled bars, the audio, visual and event relevance curves (told apart by dash pattern
    as well as colour) with the threshold line, the label of each second as a band
    (background hatched), a time axis, and a playhead that follows the video. Clicking the
    timeline seeks there (an event's bar or label: to the event's start); hovering a second
    shows its label, probability and relevances; the event list below seeks to an event's
    start and plays. A video that cannot be loaded (moved, missing) gets one line under its
    player naming the file. Sections render when they come near the viewport, so a page of
    hundreds of videos stays light.
  * cml: the query's player with its range marked, the target's with the best window and
    the per-second score curve.
  * keyboard: the timeline is a slider (arrow keys step a second, Home/End), events and
    ranges are buttons (Tab, Enter); labels are written on the bars; the layout reflows
    down to a phone's width.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ...core import jsonio
from ...core.atomic import write_text_atomic
from ...core.errors import shown
from .query import AUDIO_SUFFIXES
from .timeline import label_colours

if TYPE_CHECKING:
    from .outputs import VideoLocalization
    from .query import QueryResult

ASSETS = "report_assets"
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def asset(name: str) -> str:
    """The text of a file of `report_assets/` (from the installed package)."""
    return resources.files(__package__).joinpath(ASSETS, name).read_text(encoding="utf-8")


def media_src(media_path: str | os.PathLike, page_path: str | os.PathLike) -> str:
    """The URL of `media_path` relative to the page's folder (percent-encoded, '/'-separated);
    a file URI where no relative path exists (another drive)."""
    media, folder = Path(os.path.abspath(media_path)), Path(os.path.abspath(page_path)).parent
    try:
        rel = os.path.relpath(media, folder)
    except ValueError:  # Windows: another drive
        return media.as_uri()
    return quote(os.fsencode(Path(rel).as_posix()), safe="/")  # bytes: a name that is not UTF-8 keeps its bytes


def media_entry(media_path: str, page_path: str | os.PathLike) -> dict:
    element = "audio" if Path(media_path).suffix.lower() in AUDIO_SUFFIXES else "video"
    return {"src": media_src(media_path, page_path), "element": element}


def script_json(obj) -> str:
    """JSON that is safe inside a <script> element (no '</script>', no '<!--') and still
    parses to the same value."""
    text = jsonio.dumps(obj, nonfinite="refuse", ensure_ascii=False, separators=(",", ":"))  # scores: checked finite
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


def render_page(title: str, envelope: dict) -> str:
    """The page: the template with its title, the inlined CSS and JavaScript and the data."""
    parts = {
        "title": html.escape(title),
        "css": asset("report.css"),
        "js": asset("report.js"),
        "data": script_json(envelope),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], asset("page.html"))


def localization_envelope(results: Sequence[VideoLocalization], page_path: str | os.PathLike) -> dict:
    classes: list[str] = []
    for r in results:
        for name in r.model.classes if r.model is not None else ():
            if name not in classes:
                classes.append(name)
    return {
        "report": "localization",
        "media": [media_entry(r.video, page_path) for r in results],
        "colours": label_colours(classes),
        "data": [r.to_dict() for r in results],
    }


def write_localization_report(
    results: VideoLocalization | Sequence[VideoLocalization], path: str | os.PathLike
) -> None:
    """One page for the videos of `avel localize` (failed ones are listed with their error)."""
    results = [results] if hasattr(results, "to_dict") else list(results)
    title = (
        f"avel: {shown(os.path.basename(results[0].video))}" if len(results) == 1 else f"avel: {len(results)} videos"
    )
    _write(path, render_page(title, localization_envelope(results, path)))


def query_envelope(result: QueryResult, page_path: str | os.PathLike) -> dict:
    return {
        "report": "cml",
        "media": {"query": media_entry(result.query, page_path), "target": media_entry(result.target, page_path)},
        "data": result.to_dict(),
    }


def write_query_report(result: QueryResult, path: str | os.PathLike) -> None:
    """One page for an `avel cml` query: the query with its range, the target with the match."""
    title = f"avel {result.direction.upper()}: {shown(os.path.basename(result.query))} in {shown(os.path.basename(result.target))}"
    _write(path, render_page(title, query_envelope(result, path)))


def _write(path: str | os.PathLike, page: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_text_atomic(path, page)
