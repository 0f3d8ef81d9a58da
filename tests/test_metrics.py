"""The metrics against brute force and hand-computed cases."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from avel.models.inference import max_contiguous_window, min_distance_window, window_sums
from avel.pipeline.train.metrics import cml_accuracy, cml_queries, sel_accuracy


# --- windows --------------------------------------------------------------------------------
def brute_max_window(scores: list[float], l: int) -> int:
    best, best_s = -math.inf, None
    for s in range(len(scores) - l + 1):
        total = sum(scores[s : s + l])
        if total > best:  # strict: ties keep the earliest
            best, best_s = total, s
    return best_s


def brute_min_distance(dist: list[list[float]]) -> int:
    l, T = len(dist), len(dist[0])
    best, best_s = math.inf, None
    for s in range(T - l + 1):
        total = sum(dist[i][s + i] for i in range(l))
        if total < best:
            best, best_s = total, s
    return best_s


def test_max_window_hand_cases():
    assert max_contiguous_window(torch.tensor([0.1, 0.9, 0.8, 0.2, 0.95]), 2) == 1  # 1.7 vs 1.15
    assert max_contiguous_window(torch.tensor([0.1, 0.9, 0.8, 0.2, 0.95]), 1) == 4
    assert max_contiguous_window(torch.tensor([0.1, 0.9, 0.8, 0.2, 0.95]), 5) == 0
    assert max_contiguous_window(torch.tensor([1.0, 0.0, 1.0, 0.0]), 2) == 0  # tie 1/1/1 -> earliest
    assert max_contiguous_window(torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), 2) == 1  # tie 2 at 1 and 4


def test_max_window_matches_brute_force():
    rng = random.Random(0)
    for trial in range(400):
        T = rng.randint(1, 12)
        l = rng.randint(1, T)
        if trial % 2:  # small integers: many ties
            scores = [float(rng.randint(0, 3)) for _ in range(T)]
        else:
            scores = [rng.random() for _ in range(T)]
        assert max_contiguous_window(torch.tensor(scores), l) == brute_max_window(scores, l), (scores, l)


def test_min_distance_window_hand_case():
    # query of 2 segments against 4 candidates; window s sums d[0, s] + d[1, s + 1]
    d = torch.tensor([[5.0, 1.0, 2.0, 9.0], [3.0, 4.0, 0.5, 1.0]])
    # s=0: 5 + 4 = 9; s=1: 1 + 0.5 = 1.5; s=2: 2 + 1 = 3
    assert min_distance_window(d) == 1
    assert min_distance_window(torch.tensor([[1.0, 1.0, 1.0]])) == 0  # all tie -> earliest


def test_min_distance_window_matches_brute_force():
    rng = random.Random(1)
    for trial in range(400):
        T = rng.randint(1, 12)
        l = rng.randint(1, T)
        if trial % 2:
            dist = [[float(rng.randint(0, 2)) for _ in range(T)] for _ in range(l)]
        else:
            dist = [[rng.random() * 3 for _ in range(T)] for _ in range(l)]
        assert min_distance_window(torch.tensor(dist)) == brute_min_distance(dist), (dist,)


def test_window_sums_and_bad_lengths():
    assert window_sums(torch.tensor([1.0, 2.0, 3.0]), 2).tolist() == [3.0, 5.0]
    with pytest.raises(ValueError):
        max_contiguous_window(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(ValueError):
        max_contiguous_window(torch.tensor([1.0, 2.0]), 0)


# --- SEL ---------------------------------------------------------------------------------------
def test_sel_accuracy_counts_background_segments():
    bg = 3
    labels = torch.tensor([[bg, 0, 0, bg], [1, 1, 1, 1], [bg, bg, bg, bg]])
    pred = torch.tensor([[bg, 0, 2, 0], [1, 1, 1, 1], [bg, bg, 0, bg]])
    # correct: row 0: bg, 0 -> 2 of 4; row 1: 4 of 4; row 2: 3 of 4 -> 9 of 12
    assert sel_accuracy(pred, labels) == pytest.approx(9 / 12)
    assert sel_accuracy(labels, labels) == 1.0
    with pytest.raises(ValueError):
        sel_accuracy(pred[:2], labels)


# --- CML ---------------------------------------------------------------------------------------
def test_cml_queries_skip_full_and_empty():
    m = torch.tensor(
        [
            [0, 1, 1, 0, 0],  # start 1, l 2
            [1, 1, 1, 1, 1],  # full length: skipped
            [0, 0, 0, 0, 0],  # no event: skipped
            [0, 0, 0, 1, 1],  # start 3, l 2
            [1, 1, 1, 1, 0],  # start 0, l 4
        ]
    )
    q = cml_queries(m)
    assert q.keep.tolist() == [True, False, False, True, True]
    assert q.start.tolist() == [1, 0, 0, 3, 0]
    assert q.length.tolist() == [2, 0, 0, 2, 4]
    assert q.mask(5)[0].tolist() == [False, True, True, False, False]
    assert q.mask(5)[1].tolist() == [False] * 5


def test_cml_accuracy_hand_case():
    m = torch.tensor(
        [
            [0, 1, 1, 0, 0],  # true start 1
            [1, 1, 1, 1, 1],  # skipped whatever is predicted
            [0, 0, 0, 0, 0],  # skipped
            [0, 0, 0, 1, 1],  # true start 3
            [1, 1, 1, 1, 0],  # true start 0
        ]
    )
    a2v = torch.tensor([1, 0, 0, 2, 0])  # right, -, -, wrong, right -> 2 / 3
    v2a = torch.tensor([0, 3, 3, 3, 1])  # wrong, -, -, right, wrong -> 1 / 3
    r = cml_accuracy(a2v, v2a, m)
    assert r["n_videos"] == 3
    assert r["a2v"] == pytest.approx(2 / 3)
    assert r["v2a"] == pytest.approx(1 / 3)


def test_cml_accuracy_nothing_to_evaluate():
    r = cml_accuracy(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.ones(2, 4))
    assert r["n_videos"] == 0 and math.isnan(r["a2v"]) and math.isnan(r["v2a"])


def test_cml_accuracy_matches_per_video_loop():
    g = torch.Generator().manual_seed(0)
    T = 6
    rows = []
    for s, l in itertools.product(range(T), range(0, T + 1)):
        if s + l <= T:
            rows.append([1 if s <= t < s + l else 0 for t in range(T)])
    m = torch.tensor(rows)
    a2v = torch.randint(0, T, (len(rows),), generator=g)
    v2a = torch.randint(0, T, (len(rows),), generator=g)
    r = cml_accuracy(a2v, v2a, m)
    ok_a = ok_v = n = 0
    for row, pa, pv in zip(rows, a2v.tolist(), v2a.tolist()):
        l = sum(row)
        if l == 0 or l == T:
            continue
        start = row.index(1)
        n += 1
        ok_a += pa == start
        ok_v += pv == start
    assert r["n_videos"] == n
    assert r["a2v"] == pytest.approx(ok_a / n) and r["v2a"] == pytest.approx(ok_v / n)
