import os
from pathlib import Path

import pytest

from avel.core.atomic import TEMP_MARK, atomic_open, atomic_path, write_bytes_atomic, write_text_atomic


def test_replaces_whole(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("old")
    write_text_atomic(p, "new ü")
    assert p.read_text(encoding="utf-8") == "new ü"
    write_bytes_atomic(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["a.json"]


def test_failure_leaves_target_and_no_temporary(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        with atomic_open(p, encoding="ascii") as f:
            f.write("partial\n")
            f.write("\udcff")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as tmp:
            tmp.write_text("x")
            raise KeyboardInterrupt
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["rows.csv"]


def test_temporary_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "t.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and TEMP_MARK in tmp.name and tmp.name.startswith(".")
        tmp.write_bytes(b"png")
    assert (tmp_path / "t.png").read_bytes() == b"png"


def test_a_named_temporary_and_the_object_form(tmp_path):
    """`tmp` names the temporary file (the cache's names say who writes them); AtomicFile is
    the same writer for a file written over many calls: commit renames, discard removes."""
    from avel.core.atomic import AtomicFile

    target = tmp_path / "part.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target, tmp=".tmp-me.h5") as tmp:
            assert tmp == tmp_path / ".tmp-me.h5"
            tmp.write_bytes(b"half")
            raise RuntimeError("a writer that fails")
    assert os.listdir(tmp_path) == []
    pending = AtomicFile(target, tmp=".tmp-me.h5")
    pending.tmp.write_bytes(b"whole")
    assert pending.commit() == target and target.read_bytes() == b"whole"
    dropped = AtomicFile(target)
    dropped.tmp.write_bytes(b"never")
    dropped.discard()
    assert os.listdir(tmp_path) == ["part.h5"] and target.read_bytes() == b"whole"


def test_a_failed_csv_leaves_the_old_file_and_no_temporary(tmp_path):
    """localize's CSV fails half-way (a label that cannot be encoded, the writer's own bug
    stand-in): the earlier out.csv is intact and nothing else is left (it used to leave
    out.csv.part). A video name that is not UTF-8 is no failure: it is written escaped."""
    from avel.pipeline.apps.outputs import SecondResult, VideoLocalization, write_csv

    out = tmp_path / "out.csv"
    out.write_text("earlier\n")
    second = SecondResult(0, 1, "dog", 0.9, 0.8, 0.7, 0.6)
    good = VideoLocalization(video="dog.mp4", duration_s=1.0, segments=[second])
    bad = VideoLocalization(
        video="dog.mp4", duration_s=1.0, segments=[SecondResult(0, 1, "d\udce9g", 0.9, 0.8, 0.7, 0.6)]
    )
    with pytest.raises(UnicodeEncodeError):
        write_csv([good, bad], out)
    assert out.read_text() == "earlier\n" and os.listdir(tmp_path) == ["out.csv"]
    write_csv([good, VideoLocalization(video="caf\udce9.mp4", duration_s=1.0, segments=[second])], out)
    lines = out.read_text().splitlines()
    assert lines[1] == "dog.mp4,0,1,dog,0.9,0.8,0.7,0.6" and lines[2].startswith("caf\\xe9.mp4,0,1,dog")


def test_a_folder_of_videos_skips_files_being_written(tmp_path):
    """The atomic writer's temporaries keep their suffix (.mp4): a folder scan does not take
    one (left by a killed `avel synth`) for a video."""
    from avel.pipeline.extract.local import find_videos

    (tmp_path / "a.mp4").write_bytes(b"")
    with atomic_path(tmp_path / "b.mp4") as tmp:
        tmp.write_bytes(b"")
        assert find_videos(tmp_path) == [tmp_path / "a.mp4"]
    assert find_videos(tmp_path) == [tmp_path / "a.mp4", tmp_path / "b.mp4"]


# -- one writer: no hand-written temp + rename anywhere else ----------------------------------
ROOT = Path(__file__).resolve().parents[1]
RENAMES = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}


def hand_written_renames(source: str) -> list[int]:
    """Lines of `source` that rename files (os.replace/rename, shutil.move, Path.rename or
    Path.replace on a path, `from os import replace`...): only core/atomic.py may."""
    import ast

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil"):
            if any((node.module, a.name) in RENAMES for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in RENAMES:
                lines.append(node.lineno)
            elif node.attr == "rename":  # Path.rename
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace":
            if len(node.args) == 1 and not node.keywords:  # Path.replace(target); str.replace takes two
                lines.append(node.lineno)
    return sorted(lines)


def test_the_scanner_finds_a_hand_written_writer():
    assert hand_written_renames("import os\nos.replace(tmp, path)\n") == [2]
    assert hand_written_renames("from os import rename\n") == [1]
    assert hand_written_renames("tmp.rename(path)\np.with_suffix('.x').replace(path)\n") == [1, 2]
    assert hand_written_renames("import shutil\nshutil.move(a, b)\n") == [2]
    assert hand_written_renames("s = name.replace('-', ' ')\n") == []


def test_every_file_is_written_through_core_atomic():
    """A new hand-written temp-file + rename writer fails here: use core/atomic.py."""
    files = [ROOT / "__init__.py", ROOT / "cli.py"]
    for folder in ("core", "extractors", "models", "pipeline"):
        files += sorted((ROOT / folder).rglob("*.py"))
    found = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in files
        if p != ROOT / "core" / "atomic.py"
        for line in hand_written_renames(p.read_text(encoding="utf-8"))
    ]
    assert not found, f"files renamed outside core/atomic.py (write them with its atomic_path/atomic_open): {found}"
