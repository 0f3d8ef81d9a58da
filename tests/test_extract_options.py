"""Stage one's options and the jobs of `avel extract` / `avel preprocess` (pipeline/extract/
options.py, batch.py): shards disjoint and covering, every bad option refused in one line
naming it, the batch report's wording, and the single-file extraction that resumes,
refuses other settings before any work, and leaves no side directory."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mediagen import solid, tone, write_video

from avel.core.config import FeatureSettings
from avel.core.errors import AvelError, ConfigError
from avel.pipeline.cache.parts import Failure
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.extract.batch import extract_to_file, extract_videos, preprocess
from avel.pipeline.extract.local import Job, RunSummary, summary_lines
from avel.pipeline.extract.options import ExtractOptions, NetworkOptions, parse_shard, take_shard
from avel.pipeline.extract.ray_engine import RayConfig

SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1, frame_size=32)
QUIET = ExtractOptions(progress=False)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_shards_are_disjoint_cover_every_job_and_ignore_the_input_order(n):
    ids = [f"v{k:03d}" for k in range(23)]
    jobs = [Job(i, f"/videos/{i}.mp4") for i in ids]
    shuffled = random.Random(n).sample(jobs, len(jobs))
    parts = [take_shard(jobs, (i, n)) for i in range(n)]
    assert [take_shard(shuffled, (i, n)) for i in range(n)] == parts  # every machine draws the same parts
    taken = [j.id for part in parts for j in part]
    assert sorted(taken) == ids  # covering, and no job twice
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # as even as they can be
    assert take_shard(shuffled, None) == shuffled


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("3/4", (3, 4)), (None, None)])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected
    assert ExtractOptions(shard=text).part == expected


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"workers": -1}, "workers"),
        ({"commit_every": 0}, "commit_every"),
        ({"shard": "2/2"}, "shard"),
        ({"shard": "x"}, "shard"),
        ({"shard": "-1/2"}, "shard"),
        ({"shard": "0/0"}, "shard"),
        ({"shard": "0/2/3"}, "shard"),
        ({"storage_dtype": "int8"}, "storage_dtype"),
        ({"pooled": "yes"}, "pooled"),
        ({"workers": 1.5}, "workers"),
    ],
)
def test_extract_options_refuse_bad_values_in_one_line(fields, field):
    with pytest.raises(ConfigError) as e:
        ExtractOptions(**fields)
    assert e.value.field == field and "\n" not in str(e.value)


def test_extract_option_messages():
    with pytest.raises(ConfigError, match="must be >= 0"):
        ExtractOptions(workers=-1)
    with pytest.raises(ConfigError, match="must be >= 1"):
        ExtractOptions(commit_every=0)
    with pytest.raises(ConfigError, match=r"expected i/n with 0 <= i < n, e\.g\. 0/4"):
        ExtractOptions(shard="4/4")


def test_network_options():
    n = NetworkOptions(visual_weights_file=Path("w/vgg19.h5"), device="cpu", batch_size=2)
    assert n.visual_weights_file == "w/vgg19.h5" and n.audio_weights_file is None
    assert n.as_kwargs() == {
        "visual_weights_file": "w/vgg19.h5",
        "audio_weights_file": None,
        "audio_pca_file": None,
        "device": "cpu",
        "batch_size": 2,
    }
    with pytest.raises(ConfigError) as e:
        NetworkOptions(batch_size=0)
    assert (e.value.field, e.value.problem) == ("batch_size", "must be >= 1")
    with pytest.raises(ConfigError) as e:
        NetworkOptions(device="gpu")
    assert e.value.field == "device"


def failure(k: int, error: str = "bad.mp4: no video stream") -> Failure:
    return Failure(f"v{k}", f"v{k}.mp4", "decode", error)


def test_summary_lines():
    s = RunSummary(done=2, skipped=3, failed=[failure(1, "v1.mp4: broken\n  at byte 12")], earlier_failed=[failure(2)])
    assert summary_lines(s, "cache") == [
        "2 extracted, 2 already done, 1 failed, 1 failed in an earlier run (--retry-failed tries them again) -> cache",
        "  decode: v1.mp4: broken at byte 12",
        "  decode: bad.mp4: no video stream",
    ]
    assert s.all_failed == s.failed + s.earlier_failed
    assert summary_lines(RunSummary(done=1), "out.h5") == ["1 extracted, 0 already done, 0 failed -> out.h5"]
    many = summary_lines(RunSummary(failed=[failure(k) for k in range(25)]), "c")
    assert len(many) == 1 + 20 + 1 and many[-1] == "  ... and 5 more (see the cache's failures)"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [
        write_video(folder / f"c{k}.mp4", duration_s=2, color=solid((40 * k, 90, 200)), audio=tone(300 + 100 * k))
        for k in range(3)
    ]


def test_extract_to_file_resumes_and_leaves_no_side_directory(tmp_path, clips):
    network = NetworkOptions(device="cpu")
    out = tmp_path / "features.h5"
    first = extract_videos(clips[:2], out, SETTINGS, network, QUIET)
    assert (first.done, first.skipped, first.failed) == (2, 0, [])
    again = extract_videos(clips, out, SETTINGS, network, QUIET)
    assert (again.done, again.skipped, again.failed) == (1, 2, [])
    assert sorted(FeatureCache(out).ids()) == ["c0", "c1", "c2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5"]  # no .partial left, no temporary file


def test_extract_to_file_refuses_other_settings_before_any_work(tmp_path, clips):
    out = tmp_path / "features.h5"
    extract_videos(clips[:1], out, SETTINGS, NetworkOptions(device="cpu"), QUIET)
    other = NetworkOptions(device="cpu").extractor(FeatureSettings(**{**SETTINGS.to_dict(), "seed": 1}))
    with pytest.raises(AvelError, match="seed"):
        extract_to_file([Job("c1", str(clips[1]))], out, other, QUIET)
    with pytest.raises(AvelError, match="storage_dtype"):
        extract_videos(
            clips[1:2],
            out,
            SETTINGS,
            NetworkOptions(device="cpu"),
            ExtractOptions(storage_dtype="float16", progress=False),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5"]
    assert list(FeatureCache(out).ids()) == ["c0"]


def test_preprocess_refuses_ray_settings_on_the_local_engine_before_reading(tmp_path):
    with pytest.raises(ConfigError) as e:
        preprocess(
            tmp_path / "missing",
            tmp_path / "cache",
            SETTINGS,
            NetworkOptions(device="cpu"),
            QUIET,
            ray_config=RayConfig(extractors=2, decoders=3),
        )
    assert (e.value.field, e.value.problem) == ("engine", "--decoders, --extractors need --engine ray")
    with pytest.raises(AvelError, match="missing: no such folder or list file"):
        preprocess(tmp_path / "missing", tmp_path / "cache", SETTINGS, NetworkOptions(device="cpu"), QUIET)
    assert not (tmp_path / "cache").exists()


def test_preprocess_takes_its_shard(tmp_path, clips):
    caches = [tmp_path / f"shard{i}" for i in range(2)]
    for i, cache in enumerate(caches):
        s = preprocess(
            Path(clips[0]).parent,
            cache,
            SETTINGS,
            NetworkOptions(device="cpu"),
            ExtractOptions(shard=f"{i}/2", progress=False),
        )
        assert not s.failed
    assert [sorted(FeatureCache(c).ids()) for c in caches] == [["c0", "c2"], ["c1"]]
