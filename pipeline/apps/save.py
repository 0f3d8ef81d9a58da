"""What `avel localize` and `avel cml` write besides the terminal: every output file asked
for, each through the atomic writer, named so that no two videos share a file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from .outputs import VideoLocalization, write_csv, write_json
from .query import QueryResult, write_query_json
from .report import write_localization_report, write_query_report
from .timeline import plot_query, plot_timeline


def distinct_names(videos: Sequence[str]) -> list[str]:
    """A short name per video, all different: the file's stem; where stems clash, the
    shortest tail of the path (file name included) that tells those videos apart, with '-'
    for the separators (`a/clip.mp4`, `b/clip.mp4` -> `a-clip.mp4`, `b-clip.mp4`;
    `clip.mp4`, `clip.webm` -> `clip.mp4`, `clip.webm`); the same path twice is numbered."""
    paths = [PurePath(v) for v in videos]
    names = [p.stem for p in paths]
    for stem in {n for n in names if names.count(n) > 1}:
        group = [i for i, p in enumerate(paths) if p.stem == stem]
        depth = 1
        while True:
            tails = ["-".join(paths[i].parts[-depth:]) for i in group]
            if len(set(tails)) == len(tails) or depth >= max(len(paths[i].parts) for i in group):
                break
            depth += 1
        for i, tail in zip(group, tails):
            names[i] = tail
    twice = {n for n in names if names.count(n) > 1}
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in twice:
            seen[n] = seen.get(n, 0) + 1
            names[i] = f"{n}-{seen[n]}"
    return names


def plot_paths(plot: str | os.PathLike, videos: Sequence[str]) -> list[Path]:
    """Where each video's timeline goes: `plot` for one video; NAME-<video>.SUFFIX for several."""
    plot = Path(plot)
    if len(videos) == 1:
        return [plot]
    return [plot.with_name(f"{plot.stem}-{name}{plot.suffix}") for name in distinct_names(videos)]


def save_localizations(
    results: Sequence[VideoLocalization], *, json_path=None, csv_path=None, plot=None, html=None
) -> None:
    """The files `avel localize` was asked for: JSON (every video, failures included), CSV,
    timelines and the HTML report (the videos that worked)."""
    ok = [r for r in results if r.ok]
    if json_path is not None:
        write_json(list(results), json_path)
    if csv_path is not None:
        write_csv(ok, csv_path)
    if plot is not None:
        for r, target in zip(ok, plot_paths(plot, [r.video for r in ok])):
            plot_timeline(r, target)
    if html is not None:
        write_localization_report(list(results), html)


def save_query(result: QueryResult, *, json_path=None, plot=None, html=None) -> None:
    """The files `avel cml` was asked for."""
    if json_path is not None:
        write_query_json(result, json_path)
    if plot is not None:
        plot_query(result, plot)
    if html is not None:
        write_query_report(result, html)
