"""`avel live`: a stream localized while it plays. The causal rule is checked against cases
worked by hand (a scorer whose outputs are written in the features); the live runs read
generated MPEG-TS streams written into a pipe at 1x speed (pipeline/media/paced.py), and
their events must equal the same rule's run over the saved stream (`live_offline`) within
one second. Stalls, the end of a stream, dropped seconds and Ctrl-C are each one record (or
line) and a summary. Extractors are the seeded random ones at 64x64, one frame a second;
the SEL model has random weights."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Page, own_netns

from avel.cli import main
from avel.core.config import FeatureSettings
from avel.extractors.registry import random_weights_tag
from avel.models.inference import SegmentScores
from avel.models.registry import build_model, model_config
from avel.pipeline.apps import live as live_module
from avel.pipeline.apps.live import CausalDecider, LiveConfig, events_of, live, live_offline, run_live_command
from avel.pipeline.media.paced import event_clip, play
from avel.pipeline.train.checkpoint import save_checkpoint

SETTINGS = FeatureSettings(
    visual_model="random",
    audio_model="random",
    frames_per_segment=1,
    frame_size=64,
    segments=4,
    visual_weights_sha256=random_weights_tag(0),
    audio_weights_sha256=random_weights_tag(0),
)
CLASSES = ["alpha", "beta", "gamma"]
RUN = dict(device="cpu", batch_size=16)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on 2 busy cores cost 3x more than one
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    torch.manual_seed(0)
    cfg = model_config(task="sel", name="dam", num_classes=len(CLASSES) + 1)
    ckpt = str(save_checkpoint(d / "sel.safetensors", build_model(cfg), cfg, CLASSES, SETTINGS, {}))
    return {"dir": d, "sel": ckpt, "clip": event_clip(6, fps=4, width=64, height=48)}


def writer(fd_or_file, clip, **kw) -> threading.Thread:
    """Play `clip` into a pipe in a thread (a reader that leaves early breaks the pipe: fine)."""

    def run():
        try:
            with os.fdopen(fd_or_file, "wb") if isinstance(fd_or_file, int) else fd_or_file as f:
                play(f, clip, **kw)
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            if kw.get("copy") is not None:
                kw["copy"].close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


# ---------------------------------------------------------------------------------------
# the rule, worked by hand
def coded_scorer(audio: np.ndarray, visual: np.ndarray) -> SegmentScores:
    """Relevance of every position = the mean over the window of audio[..., 0]; the category
    probabilities are (0.8, 0.2) for the whole window."""
    B, w = audio.shape[:2]
    rel = np.repeat(audio[..., 0].mean(axis=1, keepdims=True), w, axis=1)  # [B, w]
    probs = np.tile(np.array([0.8, 0.2]), (B, w, 1))
    return SegmentScores(probs, rel, rel, rel)


def feed(decider: CausalDecider, codes, drop=()) -> list[dict]:
    out = []
    for t, r in enumerate(codes):
        out += decider.drop(t) if t in drop else decider.push(t, np.array([r, 0.0]), np.zeros((1, 2)))
    return out + decider.finish()


def test_the_causal_rule_by_hand():
    # W = 2: second t is decided from seconds t-1, t: relevances 0, .5, 1, .5, 0, .5
    recs = feed(CausalDecider(coded_scorer, ("x", "y"), window=2), [0, 1, 1, 0, 0, 1])
    seconds = [r for r in recs if r["type"] == "second"]
    assert [r["relevance"] for r in seconds] == [0, 0.5, 1, 0.5, 0, 0.5]
    assert [r["label"] for r in seconds] == ["background", "x", "x", "x", "background", "x"]
    assert [r["context"] for r in seconds] == [1, 2, 2, 2, 2, 2]
    assert events_of(recs) == [
        {"start_s": 1, "end_s": 4, "label": "x", "score": round((0.4 + 0.8 + 0.4) / 3, 6)},
        {"start_s": 5, "end_s": 6, "label": "x", "score": 0.4},
    ]
    starts = [r for r in recs if r["type"] == "event_start"]
    assert [(r["start_s"], r["label"]) for r in starts] == [(1, "x"), (5, "x")]
    assert recs.index(starts[0]) == recs.index(seconds[1]) + 1  # said as soon as its first second is decided


def test_lookahead_revises_each_second_once_and_events_follow_the_revision():
    # revised from seconds t, t+1: relevances .5, 1, .5, 0, .5; the last second keeps its causal .5
    recs = feed(CausalDecider(coded_scorer, ("x", "y"), window=2, lookahead=1), [0, 1, 1, 0, 0, 1])
    revisions = [r for r in recs if r["type"] == "revision"]
    assert [r["t"] for r in revisions] == [0, 1, 2, 3, 4]
    assert [r["relevance"] for r in revisions] == [0.5, 1, 0.5, 0, 0.5]
    assert [r["changed"] for r in revisions] == [True, False, False, True, True]
    assert [r["was"] for r in revisions] == ["background", "x", "x", "x", "background"]
    assert events_of(recs) == [
        {"start_s": 0, "end_s": 3, "label": "x", "score": round((0.4 + 0.8 + 0.4) / 3, 6)},
        {"start_s": 4, "end_s": 6, "label": "x", "score": 0.4},
    ]


def test_a_dropped_second_ends_the_running_event_and_leaves_the_window():
    recs = feed(CausalDecider(coded_scorer, ("x", "y"), window=2), [1, 1, 1, 1, 1], drop={2})
    assert events_of(recs) == [
        {"start_s": 0, "end_s": 2, "label": "x", "score": 0.8},
        {"start_s": 3, "end_s": 5, "label": "x", "score": 0.8},
    ]
    assert [r["context"] for r in recs if r["type"] == "second"] == [1, 2, 1, 2]  # second 2 is not in 3's window


# ---------------------------------------------------------------------------------------
# live runs on paced pipes
def test_a_paced_pipe_stream_is_decided_every_second_and_equals_the_offline_run(work):
    r, w = os.pipe()
    saved = work["dir"] / "paced.ts"
    run = live(os.fdopen(r, "rb"), work["sel"], max_pending=8, **RUN)  # room for every second: none is dropped
    th = writer(w, work["clip"], copy=open(saved, "wb"))
    recs = list(run)
    th.join(30)
    seconds = [rec for rec in recs if rec["type"] == "second"]
    assert [s["t"] for s in seconds] == list(range(6))
    for s in seconds:
        assert s["end_s"] == s["start_s"] + 1 == s["t"] + 1
        assert s["label"] in CLASSES + ["background"]
        assert 0 <= s["probability"] <= 1 and 0 <= s["relevance"] <= 1
        assert 0 <= s["delay_s"] < 30 and abs(s["wall_time"] - time.time()) < 120
        assert s["context"] == min(s["t"] + 1, 4)  # the checkpoint's window: 4
    assert recs[-1]["type"] == "stream" and recs[-1]["kind"] == "ended"
    assert not [rec for rec in recs if rec["type"] in ("dropped", "revision")]
    summary = run.summary()
    assert summary["seconds"] == 6 and summary["dropped"] == 0 and summary["stalls"] == 0
    assert summary["delay_s"]["median"] <= summary["delay_s"]["p95"] <= summary["delay_s"]["max"]
    # events: the live run's equal the causal rule's over the saved stream, within one second
    live_events = events_of(recs)
    assert live_events  # the random model finds events in this stream: the comparison below is not empty
    offline = events_of(live_offline(saved, work["sel"], **RUN))
    assert summary["events"] == live_events
    assert [e["label"] for e in live_events] == [e["label"] for e in offline]
    for a, b in zip(live_events, offline):
        assert abs(a["start_s"] - b["start_s"]) <= 1 and abs(a["end_s"] - b["end_s"]) <= 1
    starts = [rec["start_s"] for rec in recs if rec["type"] == "event_start"]
    assert starts == [e["start_s"] for e in live_events]


def test_a_stall_is_one_record_and_the_run_waits_for_the_stream(work):
    r, w = os.pipe()
    run = live(os.fdopen(r, "rb"), work["sel"], stall_s=1.0, max_pending=8, **RUN)
    th = writer(w, event_clip(4, fps=4, width=64, height=48), pause=(2.2, 2.5))
    recs = list(run)
    th.join(30)
    stream = [(rec["kind"], rec["message"]) for rec in recs if rec["type"] == "stream"]
    assert [k for k, _ in stream] == ["stall", "resumed", "ended"], stream
    assert "no packet for 1 s; waiting" in stream[0][1]
    assert [rec["t"] for rec in recs if rec["type"] == "second"] == [0, 1, 2, 3]
    assert run.summary()["stalls"] == 1


def test_when_the_model_falls_behind_seconds_are_dropped_one_record_each(work):
    r, w = os.pipe()
    run = live(os.fdopen(r, "rb"), work["sel"], max_pending=1, **RUN)
    slow = run.decider.score
    run.decider.score = lambda a, v: (time.sleep(0.4), slow(a, v))[1]  # a model slower than the stream
    th = writer(w, work["clip"], speed=100.0)  # the whole stream at once
    recs = list(run)
    th.join(30)
    decided = [rec["t"] for rec in recs if rec["type"] == "second"]
    dropped = [rec["t"] for rec in recs if rec["type"] == "dropped"]
    assert dropped and sorted(decided + dropped) == list(range(6))
    assert all("dropped: the model is behind" in rec["message"] for rec in recs if rec["type"] == "dropped")
    assert run.summary()["dropped"] == len(dropped) and run.summary()["seconds"] == len(decided)


def test_a_stream_that_drops_its_audio_is_one_record_and_goes_on_with_silence(work):
    r, w = os.pipe()
    run = live(os.fdopen(r, "rb"), work["sel"], max_pending=8, **RUN)
    th = writer(w, event_clip(6, fps=4, width=64, height=48), audio_until_s=1.5)
    recs = list(run)
    th.join(30)
    lost = [rec for rec in recs if rec["type"] == "stream" and rec["kind"] == "audio_lost"]
    assert len(lost) == 1 and "the audio is more than 3 s behind the video" in lost[0]["message"]
    assert [rec["t"] for rec in recs if rec["type"] == "second"] == list(range(6))
    assert run.summary()["audio_lost"] is True


def test_the_live_page_serves_the_records_on_loopback():
    from urllib.request import urlopen

    from avel.pipeline.apps.live_page import LivePage

    page = LivePage(0, "udp://127.0.0.1:5000 <test>")
    try:
        assert page.url.startswith("http://127.0.0.1:")
        assert page.server.server_address[0] == "127.0.0.1"
        html = urlopen(page.url, timeout=10).read().decode()
        assert "avel live" in html and "&lt;test&gt;" in html and "/records?since=" in html
        for t in range(3):
            page.add({"type": "second", "t": t, "label": "background", "probability": 0.5})
        assert json.loads(urlopen(page.url + "records?since=0", timeout=10).read()) == {
            "records": [{"type": "second", "t": t, "label": "background", "probability": 0.5} for t in range(3)],
            "next": 3,
        }
        page.add({"type": "event_end", "start_s": 1, "end_s": 3, "label": "x", "score": 0.5})
        later = json.loads(urlopen(page.url + "records?since=3", timeout=10).read())
        assert [r["type"] for r in later["records"]] == ["event_end"] and later["next"] == 4
    finally:
        page.close()


def test_the_live_page_stays_until_a_polling_page_has_every_record():
    from urllib.request import urlopen

    from avel.pipeline.apps.live_page import LivePage

    quiet = LivePage(0, "-")  # no page ever polled: nothing to wait for
    quiet.add({"type": "stream", "kind": "ended"})
    began = time.monotonic()
    quiet.close(linger_s=5)
    assert time.monotonic() - began < 1

    page = LivePage(0, "-")
    page.add({"type": "second", "t": 0})
    assert json.loads(urlopen(page.url + "records?since=0", timeout=10).read())["next"] == 1
    page.add({"type": "stream", "kind": "ended"})  # not fetched yet: close waits for the next poll
    later = []
    poller = threading.Timer(0.5, lambda: later.append(json.loads(urlopen(page.url + "records?since=1").read())))
    poller.start()
    began = time.monotonic()
    page.close(linger_s=5)
    waited = time.monotonic() - began
    poller.join()
    assert later == [{"records": [{"type": "stream", "kind": "ended"}], "next": 2}]
    assert 0.4 < waited < 4

    lost = LivePage(0, "-")  # a page that polled once and went away: close waits linger_s, no more
    urlopen(lost.url + "records?since=0", timeout=10).read()
    lost.add({"type": "stream", "kind": "ended"})
    began = time.monotonic()
    lost.close(linger_s=0.5)
    assert 0.4 < time.monotonic() - began < 3


# ---------------------------------------------------------------------------------------
# the command
def cli(args, clip=None, **play_kw) -> tuple[subprocess.Popen, threading.Thread | None]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from avel.cli import main; sys.exit(main())", "live", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=False,
    )
    th = writer(proc.stdin, clip, **play_kw) if clip is not None else None
    return proc, th


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[bytes, bytes]:
    """Wait for the command (not `communicate`: it would close stdin under the writer)."""
    proc.wait(timeout=timeout)
    return proc.stdout.read(), proc.stderr.read()


def lines(data: bytes) -> list[dict]:
    return [json.loads(x) for x in data.decode().splitlines() if x.strip()]


def test_cli_an_ended_stream_gives_every_second_the_summary_and_exit_0(work):
    proc, _ = cli(
        ["-", "--checkpoint", work["sel"], "--device", "cpu", "--lookahead", "1", "--max-pending", "8"],
        event_clip(3, fps=4, width=64, height=48),
        speed=2.0,
    )
    out, err = finish(proc)
    assert proc.returncode == 0, err.decode()[-2000:]
    recs = lines(out)
    assert [r["t"] for r in recs if r["type"] == "second"] == [0, 1, 2]
    assert [r["t"] for r in recs if r["type"] == "revision"] == [0, 1]  # second 2 has no second 3 to revise it
    assert recs[-1]["kind"] == "ended"
    summary = json.loads(err.decode().strip().splitlines()[-1])
    assert summary["type"] == "summary" and summary["seconds"] == 3 and summary["revised"] == 2


def test_cli_a_stall_ends_the_run_with_on_stall_end(work):
    proc, _ = cli(
        ["-", "--checkpoint", work["sel"], "--device", "cpu", "--stall-s", "1", "--on-stall", "end"],
        event_clip(6, fps=4, width=64, height=48),
        pause=(2.2, 20.0),
    )
    out, err = finish(proc)
    assert proc.returncode == 0, err.decode()[-2000:]
    stream = [r for r in lines(out) if r["type"] == "stream"]
    assert [r["kind"] for r in stream] == ["stall", "ended"]
    assert "no packet for 1 s; ending" in stream[0]["message"]
    assert json.loads(err.decode().strip().splitlines()[-1])["stalls"] == 1


def test_cli_ctrl_c_prints_the_summary_and_exits_130(work):
    proc, _ = cli(["-", "--checkpoint", work["sel"], "--device", "cpu"], work["clip"], seconds=60)
    first = proc.stdout.readline()  # the first decided second
    assert json.loads(first)["type"] in ("second", "event_start")
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, 60)
    assert proc.returncode == 130, err.decode()[-2000:]
    text = err.decode().strip().splitlines()
    summary = json.loads(next(x for x in text if x.startswith("{")))
    assert summary["type"] == "summary" and summary["seconds"] >= 1
    assert text[-1].startswith("interrupted: "), err.decode()[-2000:]


def test_cli_bad_sources_are_one_line_errors(work, tmp_path, capsys):
    assert main(["live", str(tmp_path / "missing.ts"), "--checkpoint", work["sel"], "--device", "cpu"]) == 2
    assert main(["live", "gopher://x", "--checkpoint", work["sel"], "--device", "cpu"]) == 2
    assert main(["live", "-", "--checkpoint", work["sel"], "--lookahead", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(x.startswith("error: ") for x in err), err
    assert "missing.ts: no such file" in err[0] and "unknown protocol 'gopher'" in err[1]
    assert "--lookahead 4: must be shorter than the context (4 s)" in err[2]


# ---------------------------------------------------------------------------------------
# the live page, in a real browser (tests/browser.py: Chromium in a private network namespace)
GREY = "rgb(221, 221, 221)"  # a background second's cell (and a cell not decided yet)
WATCH = """() => {
  window.seen = [];
  const note = () => seen.push({at: Date.now(), now: document.getElementById("now").textContent,
                                cells: document.querySelectorAll("#timeline div").length,
                                state: document.getElementById("state").textContent});
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""  # every change to the page, with the browser's clock (ms): what it showed while the stream played
CELLS = """() => [...document.querySelectorAll("#timeline div")].map(d => ({
  label: d.dataset.label ?? null, dropped: d.classList.contains("dropped"),
  colour: getComputedStyle(d).backgroundColor, image: getComputedStyle(d).backgroundImage}))"""
ROWS = "() => [...document.querySelectorAll('#events tr')].map(r => [...r.cells].map(c => c.textContent))"


def open_live_page(browser, url: str) -> Page:
    """The page at `url` (http://127.0.0.1:PORT/ in this process's network namespace),
    forwarded by Playwright's driver; any request elsewhere fails the test."""
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    return Page(browser["context"], url, url, forward=url)


def announced(stream) -> str:
    """The page's URL from the command's stderr ("live page: URL")."""
    seen = []
    for line in iter(stream.readline, b""):
        text = line.decode()
        if text.startswith("live page: "):
            return text.removeprefix("live page: ").strip()
        seen.append(text)
    raise AssertionError(f"the command announced no page: {''.join(seen)[-2000:]}")


def follow(page: Page, running) -> None:
    """Let the page poll until `running()` is false: Playwright forwards its requests only
    while the test is inside one of its calls."""
    deadline = time.monotonic() + 120
    while running():
        assert time.monotonic() < deadline, "the run did not end"
        page.page.wait_for_timeout(100)


def test_the_live_page_in_a_browser_follows_the_command(work, browser):
    """`avel live - --html 0` on a paced 6-s clip: the browser shows each second as the
    command prints it, the events of its event_end lines, and the end of the stream."""
    assert browser["netns"].read_text().strip() != own_netns()  # 127.0.0.1 here is not the browser's
    proc, _ = cli(["-", "--checkpoint", work["sel"], "--device", "cpu", "--max-pending", "8", "--html", "0"])
    try:
        url = announced(proc.stderr)
        page = open_live_page(browser, url)
    except BaseException:
        proc.kill()
        raise
    try:
        assert page.js("document.getElementById('state').textContent") == "playing"
        page.js(WATCH)
        th = writer(proc.stdin, work["clip"])  # the stream starts once the page is open
        follow(page, lambda: proc.poll() is None)
        out, err = finish(proc)
        th.join(30)
        assert proc.returncode == 0, err.decode()[-2000:]
        recs = lines(out)
        end = recs[-1]
        assert end["type"] == "stream" and end["kind"] == "ended"
        page.wait("(m) => document.getElementById('state').textContent === m", end["message"], timeout=10_000)
        polls = len(page.requests)
        page.page.wait_for_timeout(1200)  # more than two polls' time: the page stopped polling, the end stays
        assert page.js("document.getElementById('state').textContent") == end["message"]
        assert len(page.requests) == polls
        seconds = [r for r in recs if r["type"] == "second"]
        assert [r["t"] for r in seconds] == list(range(6))

        # while the stream played: the current second advanced, the timeline grew
        seen = page.js("seen")
        playing = [s for s in seen if s["at"] < end["wall_time"] * 1000]
        shown = [int(s["now"]) for s in seen if s["now"] != "-"]
        assert shown == sorted(shown) and shown[-1] == 5
        assert len({s["now"] for s in playing if s["now"] != "-"}) >= 3, seen
        assert len({s["cells"] for s in playing if s["cells"]}) >= 3, seen
        assert all(s["state"] == "playing" for s in playing)
        assert page.js("document.getElementById('now').textContent") == "5"
        assert float(page.js("document.getElementById('delay').textContent")) == seconds[-1]["delay_s"]

        # one cell a second, coloured by the label the command printed for it
        cells = page.js(CELLS)
        assert [c["label"] for c in cells] == [r["label"] for r in seconds]
        assert not any(c["dropped"] for c in cells)
        colour = {}
        for c in cells:
            assert colour.setdefault(c["label"], c["colour"]) == c["colour"]  # a label has one colour
        assert colour.get("background", GREY) == GREY
        events = [label for label in colour if label != "background"]
        assert events and all(colour[label] != GREY for label in events)
        assert len({colour[label] for label in events}) == len(events)  # and each label its own

        # the events table: the command's event_end lines, in order
        expected = events_of(recs)
        assert expected
        rows = page.js(ROWS)
        assert [[float(a), float(b), label, float(score)] for a, b, label, score in rows] == [
            [e["start_s"], e["end_s"], e["label"], e["score"]] for e in expected
        ]
        paths = {r.removeprefix(url[:-1]) for r in page.requests}
        assert "/" in paths and all(p == "/" or p.startswith("/records?since=") for p in paths), paths
    finally:
        if proc.poll() is None:
            proc.kill()
        page.close()  # no console or page error, no request anywhere else


HOSTILE = '<img src="x">&amp; <b>'  # a class name as the checkpoint may spell it: text, never markup


def test_the_live_page_draws_records_written_by_hand(browser):
    """Records fed by hand, one step at a time, each checked on screen: a revision recolours
    its cell, a dropped second is drawn as dropped, a stall and its resumption are said, a
    label is shown as text whatever characters it has, the end is kept."""
    from avel.pipeline.apps.live_page import LivePage

    server = LivePage(0, "<source> & co")
    page = open_live_page(browser, server.url)

    def second(t, label, kind="second", **extra):
        server.add({"type": kind, "t": t, "start_s": t, "end_s": t + 1, "label": label, "probability": 0.75, **extra})

    def show(expression, arg=None):
        page.wait(expression, arg, timeout=10_000)  # the page polls twice a second

    try:
        assert page.js("document.title") == "avel live: <source> & co"
        second(0, "background", delay_s=0.5)
        second(1, HOSTILE, delay_s=0.625)
        server.add({"type": "event_start", "start_s": 1, "label": HOSTILE})
        show("document.getElementById('now').textContent === '1'")
        cells = page.js(CELLS)
        assert [c["label"] for c in cells] == ["background", HOSTILE] and cells[0]["colour"] == GREY
        assert cells[1]["colour"] != GREY and page.js("document.getElementById('delay').textContent") == "0.625"
        assert page.js("document.querySelector('#timeline div:nth-child(2)').title") == f"1 s: {HOSTILE} (0.75)"

        second(1, "background", kind="revision", changed=True, was=HOSTILE)  # revised: no longer an event
        server.add({"type": "dropped", "t": 2, "message": "-: second 2 dropped: the model is behind"})
        show("document.querySelectorAll('#timeline div').length === 3")
        cells = page.js(CELLS)
        assert [(c["label"], c["colour"], c["dropped"]) for c in cells[:2]] == [("background", GREY, False)] * 2
        assert cells[2]["dropped"] and cells[2]["image"].startswith("repeating-linear-gradient")
        assert page.js("document.getElementById('now').textContent") == "1"  # a revision is not a new second

        server.add({"type": "stream", "kind": "stall", "at_s": 3.0, "message": "-: no packet for 5 s; waiting"})
        show("document.getElementById('state').textContent === '-: no packet for 5 s; waiting'")
        server.add({"type": "stream", "kind": "resumed", "at_s": 3.0, "message": "-: packets again"})
        show("document.getElementById('state').textContent === 'playing'")

        second(3, HOSTILE, delay_s=0.5)
        server.add({"type": "event_end", "start_s": 3, "end_s": 4, "label": HOSTILE, "score": 0.35})
        server.add({"type": "stream", "kind": "ended", "at_s": 4.0, "message": "-: the stream ended"})
        show("document.getElementById('state').textContent === '-: the stream ended'")
        assert page.js(ROWS) == [["3", "4", HOSTILE, "0.35"]]
        assert [c["label"] for c in page.js(CELLS)] == ["background", "background", None, HOSTILE]
        paths = {r.removeprefix(server.url[:-1]) for r in page.requests}
        assert all(p == "/" or p.startswith("/records?since=") for p in paths), paths
    finally:
        server.close()
        page.close()


class _Lines(io.TextIOBase):
    """A text stream that keeps what is written (the command's stderr in a thread)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)


def test_the_live_page_draws_dropped_seconds(work, browser, monkeypatch):
    """The command's own function with a model slower than the stream (as in
    test_when_the_model_falls_behind...): the seconds it drops are drawn as dropped, in place."""
    scorer = live_module.segment_scorer

    def slow(*args):
        score = scorer(*args)
        return lambda a, v: (time.sleep(0.4), score(a, v))[1]

    monkeypatch.setattr(live_module, "segment_scorer", slow)
    r, w = os.pipe()
    out, err, failed = _Lines(), _Lines(), []

    def command():
        try:
            run_live_command(
                os.fdopen(r, "rb"), work["sel"], LiveConfig(max_pending=1), html_port=0, out=out, err=err, **RUN
            )
        except BaseException as e:  # reported by the test
            failed.append(e)

    th = threading.Thread(target=command, daemon=True)
    th.start()
    deadline = time.monotonic() + 60
    while "live page: " not in err.text:
        assert not failed and time.monotonic() < deadline, (failed, err.text)
        time.sleep(0.05)
    url = err.text.split("live page: ")[1].split()[0]
    page = open_live_page(browser, url)
    try:
        play_th = writer(w, work["clip"], speed=100.0)  # the whole stream at once
        follow(page, th.is_alive)
        play_th.join(30)
        assert not failed, failed
        recs = lines(out.text.encode())
        end = recs[-1]
        assert end["kind"] == "ended"
        page.wait("(m) => document.getElementById('state').textContent === m", end["message"], timeout=10_000)
        page.page.wait_for_timeout(1200)
        assert page.js("document.getElementById('state').textContent") == end["message"]
        dropped = [rec["t"] for rec in recs if rec["type"] == "dropped"]
        decided = {rec["t"]: rec["label"] for rec in recs if rec["type"] == "second"}
        assert dropped and sorted([*dropped, *decided]) == list(range(6))
        cells = page.js(CELLS)
        assert len(cells) == 6
        for t, c in enumerate(cells):
            if t in dropped:
                assert c["dropped"] and c["label"] is None and c["image"].startswith("repeating-linear-gradient")
            else:
                assert not c["dropped"] and c["label"] == decided[t] and c["image"] == "none"
    finally:
        page.close()
