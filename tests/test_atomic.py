import os, pytest
from pathlib import Path
from avel.core.atomic import atomic_open, atomic_path, write_text_atomic, write_bytes_atomic, TEMP_MARK

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
