"""The README says what the code does (issue #10, items 12 and 13): the DAM choices it
documents are the defaults of ModelConfig, and every CML figure it quotes is labelled with
its direction (A2V: audio query -> visual window; V2A: visual query -> audio window), never by
its position in a pair."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from avel.models.registry import model_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
# the DAM paper's Table 1 (its text agrees; its Table 3 prints DAM's pair in the other order)
PUBLISHED_CML = {"47.1": "A2V", "48.5": "V2A", "35.6": "A2V", "44.8": "V2A"}


def section(title: str) -> str:
    """The README text from the heading `title` to the next heading of the same level."""
    m = re.search(rf"^(#+) {re.escape(title)}\n", README, flags=re.M)
    assert m, f"README has no section {title!r}"
    level = len(m.group(1))
    rest = README[m.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return " ".join(rest[: end.start() if end else None].split())  # one line, single spaces


def bullet(text: str, start: str) -> str:
    """The README bullet (within `text`, whitespace-normalised) that begins with `start`."""
    i = text.find("- " + start)
    assert i >= 0, f"no bullet starting with {start!r}"
    j = text.find(" - ", i + 2)
    return text[i : j if j >= 0 else None]


def test_cml_matching_is_documented_as_the_default_computes_it():
    dam = section("Stage three: DAM")
    assert model_config(task="cml").scaled_matching and model_config(task="sel").scaled_matching
    cml = bullet(dam, "CML width")
    assert "plain dot product" not in cml
    assert "sqrt(d)" in cml and "--unscaled-matching" in cml
    score = bullet(dam, "Matching score")
    assert "sqrt(d)" in score and "by default" in score and "CML" in score and "SEL" in score


def test_recurrent_embeddings_are_documented_as_the_mean_of_their_outputs():
    dam = section("Stage three: DAM")
    assert re.search(r"[Rr]ecurrent embeddings[^.]*\. [^.]*mean of (their|its) outputs over the masked segments", dam), \
        "the README must say that the recurrent embeddings average their outputs over the masked segments"


@pytest.mark.parametrize("value,direction", sorted(PUBLISHED_CML.items()))
def test_published_cml_figures_are_labelled_by_direction(value, direction):
    text = " ".join(README.split())
    occurrences = [m.start() for m in re.finditer(re.escape(value), text)]
    assert occurrences, f"the README does not quote {value}"
    for i in occurrences:
        labels = re.findall(r"\b(A2V|V2A)\b", text[max(0, i - 12) : i])
        assert labels and labels[-1] == direction, f"{value} must be labelled {direction}: ...{text[i - 40 : i + 10]}..."


def test_no_positional_direction_pairs():
    # "A2V / V2A ... x / y" makes the reader match positions; every figure gets its own label
    assert not re.search(r"A2V\s*/\s*V2A", README)
    assert not re.search(r"\d+\.\d+\s*/\s*\d+\.\d+\)", README)
