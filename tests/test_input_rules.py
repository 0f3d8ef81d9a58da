"""Rules on what enters through annotation files and the AVE layout (issue 27, items 6 and 8):
the reserved category `background`, control characters in a field, line ends, labels.h5
that is not one-hot, splits that overlap, and mil_labels.h5 read only where it is needed.
Every refusal is one line naming the file (and line); the expected texts are written here
by hand, not taken from the code."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from avel.cli import main
from avel.core.annotations import HEADER, AnnotationRow, category_index, labels_for, parse_annotations, read_annotations
from avel.core.errors import AnnotationError, CacheError, DataError
from avel.pipeline.data.ave import read_ave_layout, write_ave_layout
from avel.pipeline.data.dataset import AVData
from avel.pipeline.data.load import load_data

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# 10 rows, two classes; splits: train 0-5, val 6-7, test 8-9
LINES = [f"{('Bark', 'Cat')[i % 2]}&vid{i:02d}&good&{i % 3}&{i % 3 + 4}" for i in range(10)]
SPLITS = {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]}


def cli(capfd, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    _, err = capfd.readouterr()
    assert "Traceback" not in err
    return code, err.replace("\r", "\n").strip().splitlines()


def one_line_error(code: int, lines: list[str], *needles: str) -> str:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- the reserved category ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "background",
        "Background",
        "BACKGROUND",
        "  background\t",
        "background\u200b",
        "\u00a0Background",
        "\uff42\uff41\uff43\uff4b\uff47\uff52\uff4f\uff55\uff4e\uff44",
    ],
)
def test_a_category_that_reads_background_is_refused_naming_file_and_line(tmp_path, name):
    path = tmp_path / "Annotations.txt"
    path.write_text(f"{HEADER}\nBark&v1&good&0&3\n{name}&v2&good&1&4\n", encoding="utf-8")
    with pytest.raises(AnnotationError) as e:
        read_annotations(path)
    message = str(e.value)
    assert message.startswith(f"{path}:3: category ") and "reserved" in message and "\n" not in message
    with pytest.raises(ValueError, match="reserved|control"):  # however a row is made (a tab: a control character)
        AnnotationRow(name, "v2", "good", 1, 4)


def test_names_that_merely_contain_background_are_categories():
    rows = parse_annotations("Background noise&a&good&0&2\nbackgrounds&b&good&0&2\nback ground&c&good&1&2\n")
    assert category_index(rows) == ["Background noise", "backgrounds", "back ground"]


# -- control characters, line ends ----------------------------------------------------------------
REFUSED = ["\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x7f", "\r"]


@pytest.mark.parametrize("char", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
@pytest.mark.parametrize("field", ["category", "video id"])
def test_a_control_character_in_a_field_is_refused_naming_file_and_line(tmp_path, char, field):
    category, vid = ("Ba" + char + "rk", "v2") if field == "category" else ("Bark", "v" + char + "2")
    path = tmp_path / "a.txt"
    path.write_bytes(f"Cat&v1&good&0&3\n{category}&{vid}&good&1&4\nCat&v3&good&0&1\n".encode())
    with pytest.raises(AnnotationError) as e:
        read_annotations(path)
    # one line, the line of the file (str.splitlines would have split line 2 in two), the character
    assert str(e.value).startswith(f"{path}:2: {field} ") and f"U+{ord(char):04X}" in str(e.value)
    assert "\n" not in str(e.value) and char not in str(e.value)
    with pytest.raises(AnnotationError, match=f"U\\+{ord(char):04X}"):
        parse_annotations(f"{category}&{vid}&good&1&4")


@pytest.mark.parametrize("char", ["\x0b", "\x1c", "\u2028", "\x85"])
def test_a_control_character_beside_an_ampersand_is_not_stripped_away(char):
    """The fields are stripped of white space; a control character at a field's edge is
    refused before the strip could make it vanish."""
    with pytest.raises(AnnotationError, match="1: category"):
        parse_annotations(f"Bark{char}&v1&good&0&3")


def test_lines_end_at_newline_or_crlf_and_tabs_beside_fields_are_white_space():
    rows = parse_annotations("Bark\t&v1&good&0&3\r\nCat & v2 &good&1&2\n\nBark&v3&good&0&0")
    assert [r.to_line() for r in rows] == ["Bark&v1&good&0&3", "Cat&v2&good&1&2", "Bark&v3&good&0&0"]
    with pytest.raises(AnnotationError, match=r"<annotations>:1: category 'Ba\\trk'"):
        parse_annotations("Ba\trk&v1&good&0&3")


def test_preprocess_refuses_a_nul_category_before_any_video(tmp_path, capfd):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v1.mp4").write_bytes(b"never decoded: the annotations are refused first")
    ann = tmp_path / "Annotations.txt"
    ann.write_bytes(b"Bark\x00&v1&good&0&3\n")
    code, lines = cli(
        capfd,
        "preprocess",
        tmp_path / "videos",
        "--annotations",
        ann,
        "--out",
        tmp_path / "cache",
        "--visual-model",
        "random",
        "--audio-model",
        "random",
    )
    one_line_error(code, lines, f"{ann}:1: category 'Bark\\x00'", "U+0000")
    assert not (tmp_path / "cache").exists()


# -- the AVE layout ---------------------------------------------------------------------------------
def _layout(path, lines=LINES, splits=SPLITS):
    rows = parse_annotations("\n".join(lines))
    names = category_index(rows)
    g = torch.Generator().manual_seed(0)
    V = len(rows)
    data = AVData(
        torch.rand(V, 10, 7, 7, 512, generator=g),
        torch.rand(V, 10, 128, generator=g),
        torch.from_numpy(np.stack([labels_for(r, names) for r in rows])),
        names,
        [r.video_id for r in rows],
        {k: torch.tensor(v) for k, v in splits.items()},
    )
    write_ave_layout(path, data, annotations=rows)
    return path


def _rewrite(path, key, array):
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)


def test_the_layouts_annotations_refuse_a_background_class(tmp_path, capfd):
    ave = _layout(tmp_path / "ave")
    text = (ave / "Annotations.txt").read_text().replace("Cat&", "Background&")
    (ave / "Annotations.txt").write_text(text)
    with pytest.raises(AnnotationError, match="Annotations.txt:3: category 'Background' is reserved"):
        read_ave_layout(ave)
    code, lines = cli(capfd, "train", "sel", "--data", ave, "--out", tmp_path / "x.safetensors", "--device", "cpu")
    one_line_error(code, lines, f"{ave / 'Annotations.txt'}:3:", "reserved")


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda y: y.__setitem__((3, 5, 0), 1), "multi-hot"),  # a class and background (or two classes) at once
        (lambda y: y.__setitem__((3, 5, 0), -1), "negative"),
        (lambda y: y.__setitem__((3, 5), 0), "all zero"),
        (lambda y: y.__setitem__((3, 5), 0.5), "fractional"),
    ],
)
def test_labels_that_are_not_one_hot_are_refused_naming_the_file(tmp_path, capfd, edit, problem):
    ave = _layout(tmp_path / "ave")
    with h5py.File(ave / "labels.h5", "r") as f:
        y = f["avadataset"][...]
    assert y[3, 5].sum() == 1  # one-hot as written
    edit(y)
    _rewrite(ave / "labels.h5", "avadataset", y)
    with pytest.raises(CacheError, match="not one-hot at video 3, second 5") as e:
        read_ave_layout(ave)
    assert str(e.value).startswith(f"{ave / 'labels.h5'}: ")
    code, lines = cli(capfd, "train", "sel", "--data", ave, "--out", tmp_path / "x.safetensors", "--device", "cpu")
    one_line_error(code, lines, "labels.h5", "video 3, second 5")


@pytest.mark.parametrize(
    "a, b, family", [("train", "test", ""), ("train", "val", ""), ("val", "test", ""), ("train", "test", "_match")]
)
def test_overlapping_split_orders_are_refused_naming_both_files(tmp_path, capfd, a, b, family):
    splits = {f"{k}{family}": list(v) for k, v in SPLITS.items()}
    splits[f"{b}{family}"] = splits[f"{b}{family}"] + [splits[f"{a}{family}"][1]]  # one row in both
    ave = _layout(tmp_path / "ave", splits=splits)
    fa, fb = ave / f"{a}_order{family}.h5", ave / f"{b}_order{family}.h5"
    with pytest.raises(DataError) as e:
        read_ave_layout(ave)
    assert str(e.value) == (
        f"{fa} and {fb} share 1 rows (first: row {SPLITS[a][1]}); "
        f"the {a}{family} and {b}{family} splits must not overlap"
    )
    code, lines = cli(capfd, "train", "sel", "--data", ave, "--out", tmp_path / "x.safetensors", "--device", "cpu")
    one_line_error(code, lines, str(fa), str(fb))


def test_splits_of_different_families_may_share_rows(tmp_path):
    """AVE's CML split (train_order_match...) is another cut of the same videos."""
    ave = _layout(tmp_path / "ave", splits={**SPLITS, "train_match": [8, 9, 0], "test_match": [6]})
    assert read_ave_layout(ave).splits["train_match"].tolist() == [0, 8, 9]


def test_a_cache_whose_split_files_overlap_is_refused(tmp_path):
    from test_bad_input import make_cache  # a directory cache with annotations and split files

    cache = make_cache(tmp_path / "cache", splits={"train": range(0, 8), "val": range(7, 10), "test": range(10, 12)})
    with pytest.raises(DataError, match=r"\(split train\) and .* \(split val\) share 1 rows \(first: row 7\)"):
        load_data(cache)


def test_mil_labels_are_read_only_by_weak_supervision(tmp_path, capfd):
    ave = _layout(tmp_path / "ave")
    (ave / "mil_labels.h5").write_bytes(b"not HDF5: train sel never needs it")
    data = load_data(ave)  # not read here
    assert data.labels.shape == (10, 10)
    code, lines = cli(
        capfd, "train", "sel", "--data", ave, "--out", tmp_path / "sel.safetensors", "--device", "cpu", "--epochs", "1"
    )
    assert code == 0, lines
    assert (tmp_path / "sel.safetensors").is_file()
    code, lines = cli(
        capfd,
        "train",
        "wsel",
        "--data",
        ave,
        "--out",
        tmp_path / "wsel.safetensors",
        "--device",
        "cpu",
        "--epochs",
        "1",
    )
    one_line_error(code, lines, str(ave / "mil_labels.h5"), "HDF5")
    _rewrite(ave / "mil_labels.h5", "avadataset", np.full((10, 3), 2.0, np.float32))  # not 0/1
    with pytest.raises(CacheError, match="mil_labels.h5: avadataset must be 0/1"):
        _ = load_data(ave).video_labels  # read on first use


def test_well_formed_mil_labels_still_reach_weak_supervision(tmp_path):
    ave = _layout(tmp_path / "ave")
    data = load_data(ave)
    expected = np.zeros((10, 3), np.float32)  # Bark / Cat by row, every row has an event
    expected[np.arange(10), np.arange(10) % 2] = 1
    np.testing.assert_array_equal(data.video_labels.numpy(), expected)
    assert data.video_labels is data.video_labels  # read once
