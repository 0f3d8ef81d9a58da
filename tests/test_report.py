"""The HTML report (`avel localize --html`, `avel cml --html`, `avel demo`).

First what the page is (no browser): the `--json` data embedded once and unchanged, CSS and
JavaScript inline, nothing fetched from outside, videos referenced by a relative path and
never inlined, the data safe inside its <script> element; and the CLI writing it.

Then what it does, in a real browser: Debian's headless Chromium driven by Playwright, the
browser started inside a private network namespace (`unshare --net`, loopback only), so no
request can leave the machine, with a new empty profile. Every page load fails the test on
any console error, page error, or request outside the page's folder. The media are
generated h264/aac mp4s; the localizations are written by hand (known events at known
seconds), so every position on screen is checked against the JSON, not against the page.

The browser tests are skipped only where Chromium or Playwright is absent, and fail
instead when AVEL_BROWSER_TESTS=required (or CI=true): `.ci/run` sets it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from browser import Page, own_netns
from mediagen import tone, write_video

from avel.cli import main
from avel.core.config import FeatureSettings
from avel.extractors.registry import random_weights_tag
from avel.models.registry import build_model, model_config
from avel.pipeline.apps.outputs import ModelInfo, SecondResult, VideoLocalization, write_json
from avel.pipeline.apps.query import QueryResult, Window
from avel.pipeline.apps.report import media_src, script_json, write_localization_report, write_query_report
from avel.pipeline.apps.windows import event_summary, merge_intervals
from avel.pipeline.train.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("dog", "car", "bell")
INFO = ModelInfo(
    task="sel",
    model="dam",
    embedding="self-att",
    matching="cross",
    window=10,
    stride=5,
    checkpoint="sel.safetensors",
    classes=CLASSES,
    features_from_checkpoint=True,
)
# a 12.5-s scene: 12 whole seconds, a dog at 2-5 s, a car at 7-10 s
SCENE = ["background"] * 2 + ["dog"] * 3 + ["background"] * 2 + ["car"] * 3 + ["background"] * 2
RELEVANCE = [0.12, 0.31, 0.82, 0.91, 0.74, 0.36, 0.21, 0.71, 0.86, 0.67, 0.26, 0.1]
SCENE_S = 12.5
SIZE = (160, 120)


def localization(video, labels=SCENE, relevance=RELEVANCE, duration_s=SCENE_S) -> VideoLocalization:
    segments = [
        SecondResult(t, t + 1, label, round(0.55 + 0.03 * t, 3), rel, min(1.0, rel + 0.09), max(0.0, rel - 0.14))
        for t, (label, rel) in enumerate(zip(labels, relevance))
    ]
    events = merge_intervals(labels, [s.relevance * s.probability for s in segments])
    return VideoLocalization(
        video=str(video),
        duration_s=duration_s,
        segments=segments,
        events=events,
        model=INFO,
        features={"visual_model": "random"},
    )


def scene_image(t: float) -> np.ndarray:
    """A street: grey road, green verge; an orange dog crosses during 2-5 s, a blue car during 7-10 s."""
    w, h = SIZE
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (120, 170, 110)
    img[h // 2 :] = (90, 90, 96)
    yy, xx = np.mgrid[0:h, 0:w]
    label = SCENE[min(int(t), len(SCENE) - 1)]
    if label == "dog":
        cx = 20 + (t - 2) / 3 * (w - 40)
        img[(xx - cx) ** 2 + (yy - 0.62 * h) ** 2 <= 13**2] = (230, 130, 40)
    elif label == "car":
        cx = w - 20 - (t - 7) / 3 * (w - 40)
        img[(abs(xx - cx) <= 24) & (abs(yy - 0.7 * h) <= 10)] = (40, 80, 220)
    return img


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with the report's media inside it (the browser tests refuse any other request)."""
    root = tmp_path_factory.mktemp("site")
    (root / "clips").mkdir()
    scene = write_video(
        root / "clips" / "street scene.mp4",
        duration_s=SCENE_S,
        fps=16,
        image=scene_image,
        size=SIZE,
        audio=tone(440, 0.3),
    )
    other = write_video(
        root / "clips" / "other.mp4",
        duration_s=4,
        fps=8,
        color=lambda t: (60, 60, 200),
        size=(64, 48),
        audio=tone(300, 0.3),
    )
    return {"root": root, "scene": scene, "other": other}


# ---------------------------------------------------------------------------------------
# the page, without a browser
def embedded(page: str):
    blocks = re.findall(r'<script type="application/json" id="avel-data">(.*?)</script>', page, flags=re.S)
    assert len(blocks) == 1 and page.count('type="application/json"') == 1
    return json.loads(blocks[0])


def test_event_summary_hand_cases():
    def ev(start, end, label):
        from avel.pipeline.apps.windows import Event

        return Event(start, end, label, 0.5)

    assert event_summary([]) == {"num_events": 0, "event_seconds": 0, "top_label": None}
    assert event_summary([ev(0, 2, "a"), ev(3, 6, "b"), ev(7, 9, "a")]) == {
        "num_events": 3,
        "event_seconds": 7,
        "top_label": "a",
    }
    assert event_summary([ev(0, 2, "b"), ev(3, 5, "a")])["top_label"] == "b"  # a tie: the first to appear


def test_page_embeds_the_json_once_inline_and_references_videos_relatively(site, tmp_path):
    results = [
        localization(site["scene"]),
        localization(site["other"], SCENE[:4], RELEVANCE[:4], 4.0),
        VideoLocalization(
            video=str(tmp_path / "gone.mp4"),
            model=INFO,
            error=f"{tmp_path / 'gone.mp4'}: no such file",
            error_kind="not-found",
        ),
    ]
    page_path = tmp_path / "reports" / "report.html"
    write_localization_report(results, page_path)
    write_json(results, tmp_path / "out.json")
    page = page_path.read_text()
    doc = embedded(page)
    assert doc["report"] == "localization"
    assert doc["data"] == json.loads((tmp_path / "out.json").read_text())  # the --json output, as it is
    assert [d["summary"] for d in doc["data"]] == [
        {"num_events": 2, "event_seconds": 6, "top_label": "dog"},
        {"num_events": 1, "event_seconds": 2, "top_label": "dog"},
        None,
    ]
    assert doc["data"][0]["model"]["threshold"] == 0.5
    # every video relative to the page's folder, percent-encoded, never copied or inlined
    for entry, r in zip(doc["media"], results):
        assert not entry["src"].startswith(("/", "file:", "data:")) and " " not in entry["src"]
        assert (page_path.parent / unquote(entry["src"])).resolve() == Path(r.video).resolve()
    assert doc["media"][0]["src"].endswith("/clips/street%20scene.mp4") and doc["media"][0]["element"] == "video"
    assert not list(page_path.parent.glob("*.mp4")) and len(page) < 60_000
    # self-contained: CSS and JS inline, nothing fetched from anywhere
    assert "<style>" in page and "function timeline(" in page and "{{" not in page
    assert not re.search(r"<(link|img|iframe)\b|<script[^>]*\bsrc=|@import|url\(\s*['\"]?(https?:|//)", page)
    assert not re.search(r"(src|href)=\"(https?:|//)", page)
    assert "default-src 'none'" in page  # the page's CSP refuses anything else too


def test_the_data_cannot_close_its_script_element(site, tmp_path):
    hostile = "</script><script>alert(1)</script><!--"
    r = localization(site["scene"], [hostile if x == "dog" else x for x in SCENE])
    write_localization_report([r], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert hostile not in page and page.count("</script>") == 2
    assert embedded(page)["data"][0]["events"][0]["label"] == hostile
    assert json.loads(script_json({"a": "<&>\u2028"})) == {"a": "<&>\u2028"}


def test_media_src_is_relative_and_encoded(tmp_path):
    assert media_src(tmp_path / "a" / "b c#1.mp4", tmp_path / "a" / "r.html") == "b%20c%231.mp4"
    assert media_src(tmp_path / "v.mp4", tmp_path / "out" / "deep" / "r.html") == "../../v.mp4"
    assert media_src("x.mp4", "r.html") == "x.mp4"


def query_result(query: str, target: str) -> QueryResult:
    scores = [0.2, 0.25, 0.3, 0.35, 0.93, 0.95, 0.91, 0.3, 0.2, 0.22]
    l = 3
    windows = [float(np.mean(scores[s : s + l])) for s in range(len(scores) - l + 1)]
    return QueryResult(
        query=query,
        target=target,
        direction="v2a",
        query_modality="visual",
        target_modality="audio",
        query_start_s=2,
        query_end_s=5,
        target_duration_s=10.0,
        seconds=[Window(i, i + 1, x) for i, x in enumerate(scores)],
        window_scores=windows,
        best=Window(4, 7, windows[4]),
        score_kind="relevance",
        higher_is_better=True,
        model={
            "task": "cml",
            "model": "dam",
            "embedding": "self-att",
            "matching": "cross",
            "checkpoint": "cml.safetensors",
        },
        features={},
        query_range_given=True,
        query_duration_s=6.0,
    )


def test_query_json_matches_its_documented_schema():
    """query.py's docstring is where the CML JSON is documented: it names exactly the keys written."""
    import avel.pipeline.apps.query as query

    doc = query.__doc__
    block = doc[doc.index("JSON schema") :]
    documented = set(re.findall(r'"(\w+)":', block))
    d = query_result("q.mp4", "t.mp4").to_dict()
    written = set(d) | set(d["best"]) | set(d["seconds"][0]) | set(d["model"])
    assert documented == written
    assert d["score_range"] == [0.0, 1.0] and d["query_duration_s"] == 6.0


SETTINGS = FeatureSettings(
    visual_model="random",
    audio_model="random",
    frames_per_segment=1,
    frame_size=64,
    segments=10,
    visual_weights_sha256=random_weights_tag(0),
    audio_weights_sha256=random_weights_tag(0),
)


def test_cli_localize_and_cml_write_the_page_with_the_json_data(site, tmp_path, one_thread):
    torch.manual_seed(0)
    sel = model_config(task="sel", name="dam", num_classes=len(CLASSES) + 1)
    cml = model_config(task="cml", name="dam")
    sel_ckpt = save_checkpoint(tmp_path / "sel.safetensors", build_model(sel), sel, list(CLASSES), SETTINGS, {})
    cml_ckpt = save_checkpoint(tmp_path / "cml.safetensors", build_model(cml), cml, [], SETTINGS, {})
    out = tmp_path / "out"
    code = main(
        [
            "localize",
            site["other"],
            str(tmp_path / "missing.mp4"),
            "--checkpoint",
            str(sel_ckpt),
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "loc.json"),
            "--html",
            str(out / "report.html"),
        ]
    )
    assert code == 1  # one video failed: recorded, listed in the page, the other one localized
    doc = embedded((out / "report.html").read_text())
    assert doc["data"] == json.loads((tmp_path / "loc.json").read_text())
    assert doc["data"][0]["error"] is None and doc["data"][1]["error_kind"] == "not-found"
    assert doc["media"][0]["src"] == os.path.relpath(site["other"], out)

    code = main(
        [
            "cml",
            "--checkpoint",
            str(cml_ckpt),
            "--query",
            site["other"],
            "--query-start",
            "1",
            "--query-end",
            "3",
            "--target",
            site["scene"],
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "q.json"),
            "--html",
            str(out / "match.html"),
        ]
    )
    assert code == 0
    doc = embedded((out / "match.html").read_text())
    assert doc["report"] == "cml" and doc["data"] == json.loads((tmp_path / "q.json").read_text())
    assert doc["data"]["query_duration_s"] == pytest.approx(4.0, abs=0.1)
    assert unquote(doc["media"]["target"]["src"]) == os.path.relpath(site["scene"], out)


# ---------------------------------------------------------------------------------------
# in a real browser (tests/browser.py; the `browser` fixture: tests/conftest.py)
@pytest.fixture
def open_page(browser):
    pages: list[Page] = []

    def open_(path: Path) -> Page:
        folder = path.parent.resolve().as_uri() + "/"
        pages.append(Page(browser["context"], path.resolve().as_uri(), folder))
        return pages[-1]

    yield open_
    for p in pages:
        p.close()


def band(page: Page, section: str = "#video-0") -> dict:
    """The per-second label band of a section: left edge and width of one second (screen px)."""
    boxes = page.js(
        """(sel) => [...document.querySelectorAll(sel + ' .labels rect.second')]
                       .map(r => { const b = r.getBoundingClientRect(); return [b.left, b.right, b.top, b.bottom]; })""",
        section,
    )
    left, right = boxes[0][0], boxes[-1][1]
    return {"left": left, "second": (right - left) / len(boxes), "n": len(boxes), "y": (boxes[0][2] + boxes[0][3]) / 2}


RECORD_SEEKS = (
    "window.seeks = []; { const v = document.querySelector('#video-0 video'); "
    "v.addEventListener('seeking', () => seeks.push(v.currentTime)); }"
)  # where each seek went
PLAYHEAD_X = "(sel) => document.querySelector(sel + ' .playhead line').getBoundingClientRect().left"
VIDEO = "document.querySelector('#video-0 video')"


@pytest.fixture
def scene_page(site, open_page, monkeypatch):
    """The scene's page, written as a user would: `--html report.html` beside clips/."""
    monkeypatch.chdir(site["root"])
    path = site["root"] / "report.html"
    write_localization_report([localization("clips/street scene.mp4")], "report.html")
    page = open_page(path)
    page.wait(f"document.querySelector('#video-0[data-rendered]') && {VIDEO}.readyState >= 2")
    return page


def test_the_browser_runs_in_a_private_network_namespace(browser):
    assert browser["netns"].read_text().strip() != own_netns()


def test_the_page_plays_the_video_and_the_playhead_follows_it(scene_page, site):
    page = scene_page
    # Chromium decodes the generated h264/aac file
    assert page.js(f"[{VIDEO}.videoWidth, {VIDEO}.videoHeight]") == list(SIZE)
    assert page.js(f"{VIDEO}.duration") == pytest.approx(SCENE_S, abs=0.1)
    assert any(unquote(u).endswith("clips/street scene.mp4") for u in page.requests)
    b = band(page)
    assert b["n"] == 12
    for t in (0.0, 2.5, 9.25, 12.0):  # seeking the video moves the playhead to t seconds along the band
        page.js(f"(t) => {{ {VIDEO}.currentTime = t; }}", t)
        page.wait(f"(t) => !{VIDEO}.seeking && Math.abs({VIDEO}.currentTime - t) < 1e-3", t)
        page.wait(
            "(t) => document.querySelector('#video-0 .timeline svg').getAttribute('aria-valuenow') == t.toFixed(2)", t
        )
        assert page.js(PLAYHEAD_X, "#video-0") == pytest.approx(b["left"] + t * b["second"], abs=1.0)
    # while it plays, the playhead keeps up with the video's time
    page.js(f"{VIDEO}.currentTime = 1; {VIDEO}.play()")
    page.wait(f"{VIDEO}.currentTime > 1.6")
    x, now = page.js(
        f"[document.querySelector('#video-0 .playhead line').getBoundingClientRect().left, {VIDEO}.currentTime]"
    )
    page.js(f"{VIDEO}.pause()")
    assert x == pytest.approx(b["left"] + now * b["second"], abs=0.15 * b["second"])


def test_clicking_the_timeline_seeks_the_video(scene_page):
    page = scene_page
    b = band(page)
    page.page.mouse.click(b["left"] + 7.5 * b["second"], b["y"])
    page.wait(f"!{VIDEO}.seeking")
    assert page.js(f"{VIDEO}.currentTime") == pytest.approx(7.5, abs=0.05)


def test_clicking_the_second_event_seeks_to_its_start_and_plays(scene_page):
    page = scene_page
    car = localization("x").events[1]
    assert (car.label, car.start_s) == ("car", 7)
    button = page.page.locator("#video-0 ol.events button").nth(1)
    assert "car" in button.inner_text()
    page.js(RECORD_SEEKS)
    button.click()
    page.wait(f"!{VIDEO}.paused && {VIDEO}.currentTime > 7.3")  # it plays from there
    assert page.js("seeks") == [7]
    assert button.get_attribute("aria-current") == "true"
    page.js(f"{VIDEO}.pause()")


@pytest.mark.parametrize("part", ["text", "rect"])
def test_clicking_an_events_label_or_bar_in_the_timeline_seeks_to_its_start(scene_page, part):
    """The event's label and bar in the SVG seek where its list entry does: to its start (7 s
    for the car at 7-10 s), not to the time under the pointer (which is near 9 s here)."""
    page = scene_page
    car = localization("x").events[1]
    assert (car.label, car.start_s, car.end_s) == ("car", 7, 10)
    target = page.page.locator(f"#video-0 g.events {part}:not(.ylabel)").nth(1)
    if part == "text":
        assert target.text_content().startswith("car ")
    box = target.bounding_box()
    b = band(page)
    x = box["x"] + box["width"] - 2  # the right end of the label (of the bar): well past 7 s
    assert (x - b["left"]) / b["second"] > 8.4
    page.js(f"{VIDEO}.currentTime = 1")
    page.wait(f"!{VIDEO}.seeking && Math.abs({VIDEO}.currentTime - 1) < 1e-3")
    page.js(RECORD_SEEKS)
    page.page.mouse.click(x, box["y"] + box["height"] / 2)
    page.wait(f"seeks.length > 0 && !{VIDEO}.seeking")
    assert page.js("seeks") == [car.start_s]
    assert page.js(f"{VIDEO}.currentTime") == car.start_s


def test_a_moved_video_shows_one_line_naming_the_file(site, open_page, monkeypatch):
    """The report refers to its videos by a relative path: one that is not there leaves a
    line under the (empty) player naming the file, never a silent blank player."""
    monkeypatch.chdir(site["root"])
    shutil.copyfile(site["scene"], site["root"] / "clips" / "moved away.mp4")
    write_localization_report([localization("clips/moved away.mp4")], "moved.html")
    (site["root"] / "clips" / "moved away.mp4").unlink()  # moved after the report was written
    page = open_page(site["root"] / "moved.html")
    page.wait("document.querySelector('#video-0[data-rendered]')")
    page.page.locator("#video-0 .media-error").wait_for(state="visible")
    texts = page.js("[...document.querySelectorAll('#video-0 .media-error')].map(p => p.textContent)")
    assert texts == [
        "cannot play clips/moved away.mp4 (relative to this page): "
        "the file is missing (moved or deleted?) or not playable here"
    ]
    assert page.js("document.querySelector('#video-0 video').nextElementSibling.className") == "media-error"
    # the browser's own note of the failed load is expected here, and nothing else
    page.problems[:] = [p for p in page.problems if "ERR_FILE_NOT_FOUND" not in p]
    # a video that loads has no such line
    write_localization_report([localization("clips/street scene.mp4")], "found.html")
    found = open_page(site["root"] / "found.html")
    found.wait(f"document.querySelector('#video-0[data-rendered]') && {VIDEO}.readyState >= 2")
    assert found.js("document.querySelectorAll('.media-error').length") == 0


def test_keyboard_tab_to_an_event_and_enter_seeks(scene_page):
    page = scene_page
    page.js(f"{VIDEO}.currentTime = 11")
    page.page.locator("body").focus()
    for _ in range(30):
        page.page.keyboard.press("Tab")
        if page.js("document.activeElement.matches('ol.events button')"):
            break
    assert page.js("document.activeElement.textContent").startswith("0:02")  # the first event, dog at 2 s
    page.js(RECORD_SEEKS)
    page.page.keyboard.press("Enter")
    # the 'seeking' event is queued after currentTime changes: wait for it too (CI saw [] once)
    page.wait(f"seeks.length > 0 && !{VIDEO}.paused && {VIDEO}.currentTime >= 2")
    page.js(f"{VIDEO}.pause()")
    assert page.js("seeks") == [2]
    # the timeline is a slider: the arrow keys step a second
    page.page.locator("#video-0 .timeline svg").focus()
    page.js(f"{VIDEO}.currentTime = 5")
    page.page.keyboard.press("ArrowRight")
    page.wait(f"Math.abs({VIDEO}.currentTime - 6) < 1e-3")
    assert "of 0:12" in page.js("document.activeElement.getAttribute('aria-valuetext')")


def test_hovering_a_second_shows_its_label_probability_and_relevances(scene_page):
    page = scene_page
    b = band(page)
    page.page.mouse.move(b["left"] + 3.5 * b["second"], b["y"])
    tip = page.page.locator("#video-0 .tip")
    tip.wait_for(state="visible")
    second = localization("x").segments[3]
    text = tip.inner_text()
    for part in (
        "0:03",
        "dog",
        f"probability {second.probability:.3f}",
        f"relevance {second.relevance:.3f}",
        f"audio {second.audio_relevance:.3f}",
        f"visual {second.visual_relevance:.3f}",
    ):
        assert part in text, (part, text)
    page.page.mouse.move(b["left"] + 0.5 * b["second"], b["y"])
    page.wait("document.querySelector('#video-0 .tip').textContent.includes('background')")


def test_the_index_links_to_lazily_rendered_sections(site, open_page):
    """Two hundred videos (and one that failed): an index row for each, few players made
    until a section comes near the viewport, and each index link shows its video."""
    results = [
        localization(site["scene"]) if k % 2 else localization(site["other"], SCENE[:4], RELEVANCE[:4], 4.0)
        for k in range(200)
    ]
    results.insert(
        3, VideoLocalization(video="lost.mp4", model=INFO, error="lost.mp4: no such file", error_kind="not-found")
    )
    path = site["root"] / "many.html"
    write_localization_report(results, path)
    page = open_page(path)
    page.wait("document.querySelectorAll('table.index tbody tr').length === 201")
    assert page.js("document.querySelectorAll('section.video').length") == 201
    assert page.js("document.querySelectorAll('section.video[data-rendered]').length") <= 6  # lazily rendered
    assert page.js("document.querySelectorAll('video').length") <= 6
    row = page.page.locator("table.index tbody tr").nth(3)
    assert "failed" in row.inner_text() and "not-found" in row.inner_text()
    for k in (150, 3, 57):
        link = page.page.locator(f"table.index a[href='#video-{k}']")
        assert link.inner_text() == results[k].video
        link.click()
        page.wait(f"location.hash === '#video-{k}' && document.querySelector('#video-{k}[data-rendered]')")
        top = page.js(f"document.getElementById('video-{k}').getBoundingClientRect().top")
        assert 0 <= top < page.js("innerHeight") / 2
        if results[k].ok:
            src = page.js(f"document.querySelector('#video-{k} video').currentSrc")
            assert Path(unquote(src.removeprefix("file://"))).resolve() == Path(results[k].video).resolve()
        else:
            assert "no such file" in page.js(f"document.querySelector('#video-{k} .error').textContent")
    assert page.js("document.querySelectorAll('video').length") < 30


def is_blank(png: Path) -> bool:
    from matplotlib.image import imread

    pixels = imread(str(png))[..., :3].reshape(-1, 3)
    return pixels.std() < 0.05 or len(np.unique((pixels * 255).astype(np.uint8), axis=0)) < 50


def test_screenshot_and_a_narrow_window(scene_page, tmp_path):
    """A screenshot at 1280 px (the README's, with AVEL_SCREENSHOT_OUT=docs/report.png), and
    the page at a phone's width: nothing wider than the window, the event labels still on their bars."""
    page = scene_page
    page.js(f"{VIDEO}.currentTime = 3.4")
    page.wait(f"!{VIDEO}.seeking && {VIDEO}.readyState === 4")
    page.page.wait_for_timeout(800)  # cosmetic: the player's seek spinner fades out
    b = band(page)
    page.page.mouse.move(b["left"] + 8.5 * b["second"], b["y"] - 60)
    page.page.locator("#video-0 .tip").wait_for(state="visible")
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000 and not is_blank(shot)
    if os.environ.get("AVEL_SCREENSHOT_OUT"):
        shutil.copyfile(shot, ROOT / os.environ["AVEL_SCREENSHOT_OUT"])  # relative to the repository

    page.page.set_viewport_size({"width": 360, "height": 780})
    page.wait("document.querySelector('#video-0 .timeline svg').getAttribute('width') < 360")
    assert page.js("document.documentElement.scrollWidth") <= 360
    labels = page.js("[...document.querySelectorAll('#video-0 g.events text:not(.ylabel)')].map(t => t.textContent)")
    assert [label.split()[0] for label in labels] == ["dog", "car"]
    narrow = tmp_path / "narrow.png"
    page.page.screenshot(path=str(narrow), full_page=True)
    assert not is_blank(narrow)


def test_cml_page_marks_the_query_range_and_the_best_match(site, open_page):
    path = site["root"] / "match.html"
    r = query_result(site["other"], site["scene"])
    write_query_report(r, path)
    page = open_page(path)
    page.wait(
        "document.querySelector('#target video').readyState >= 1 && document.querySelector('#query video').readyState >= 1"
    )

    def bar(sel):
        return page.js(
            f"(() => {{ const b = document.querySelector('{sel} .bar').getBoundingClientRect(); return [b.left, b.right]; }})()"
        )

    def axis(sel):  # the time axis line: x of 0 s and of the end
        return page.js(
            f"(() => {{ const b = document.querySelector('{sel} .axis line').getBoundingClientRect(); return [b.left, b.right]; }})()"
        )

    q0, q1 = axis("#query")
    left, right = bar("#query")
    assert left == pytest.approx(q0 + 2 / 6 * (q1 - q0), abs=1.5) and right == pytest.approx(
        q0 + 5 / 6 * (q1 - q0), abs=1.5
    )
    t0, t1 = axis("#target")
    left, right = bar("#target")
    assert left == pytest.approx(t0 + 4 / 10 * (t1 - t0), abs=1.5) and right == pytest.approx(
        t0 + 7 / 10 * (t1 - t0), abs=1.5
    )
    assert "best match 4" in page.js("document.querySelector('#target g.match text:not(.ylabel)').textContent")
    assert page.js("document.querySelectorAll('#target path.curve.score').length") == 1
    page.page.locator("#target ol.events button").click()
    page.wait(
        "!document.querySelector('#target video').paused && document.querySelector('#target video').currentTime >= 4"
    )
    page.js("document.querySelector('#target video').pause()")
    page.page.locator("#query ol.events button").click()
    page.wait("document.querySelector('#query video').currentTime >= 2")
    page.js("document.querySelector('#query video').pause()")
    assert page.js("document.querySelectorAll('#target g.own .bar').length") == 0

    # a query cut from the target itself: its own seconds are marked on the target too
    write_query_report(query_result(site["scene"], site["scene"]), path)
    page = open_page(path)
    page.wait("document.querySelector('#target g.own .bar')")
    left, right = page.js(
        "(() => { const b = document.querySelector('#target g.own .bar').getBoundingClientRect(); return [b.left, b.right]; })()"
    )
    assert left == pytest.approx(t0 + 2 / 10 * (t1 - t0), abs=1.5) and right == pytest.approx(
        t0 + 5 / 10 * (t1 - t0), abs=1.5
    )


def test_a_model_without_relevance_shows_the_probability_and_no_threshold(site, open_page):
    """AV_att (and DAM without matching) write null relevances: the page draws the label's
    probability instead, and no threshold line."""
    r = localization(site["scene"])
    r.segments = [SecondResult(s.start_s, s.end_s, s.label, s.probability, None, None, None) for s in r.segments]
    path = site["root"] / "av_att.html"
    write_localization_report([r], path)
    page = open_page(path)
    page.wait("document.querySelector('#video-0[data-rendered]')")
    assert page.js("[...document.querySelectorAll('#video-0 path.curve')].map(p => p.classList[1])") == ["probability"]
    assert page.js("document.querySelectorAll('#video-0 .threshold').length") == 0
    b = band(page)
    page.page.mouse.move(b["left"] + 8.5 * b["second"], b["y"])
    page.wait("document.querySelector('#video-0 .tip').textContent.includes('probability 0.790')")
    assert "relevance" not in page.js("document.querySelector('#video-0 .tip').textContent")
