"""`avel export-ave`: a feature cache written in the AVE release layout, its rows (and their
order) taken from an Annotations.txt, its splits from the split files given."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ...core.annotations import read_annotations, split_key
from ...core.errors import AvelError
from .ave import write_ave_layout
from .load import load_cache


def read_split_files(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """{split key ("train", "val", "test", ...): the file's text} of AVE split files; a
    missing one is an AvelError naming it."""
    texts = {}
    for f in paths:
        p = Path(f)
        if not p.is_file():
            raise AvelError(f"{p}: no such split file")
        texts[split_key(p.name)] = p.read_text(encoding="utf-8-sig")
    return texts


def export_ave(
    cache: str | os.PathLike,
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split_files: Sequence[str | os.PathLike] = (),
    dtype: str = "float32",
) -> tuple[int, list[Path]]:
    """Write `cache` in the AVE release layout under `out`: (rows written, files written)."""
    rows = read_annotations(annotations)
    data = load_cache(Path(cache), rows=rows, split_texts=read_split_files(split_files))
    return len(rows), write_ave_layout(out, data, dtype=dtype, annotations=rows)
