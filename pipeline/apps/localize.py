"""`avel localize`: supervised event localization in anyone's video, of any length, with a
trained SEL checkpoint.

    results = localize(["dog.mp4", "street.mkv"], "sel.safetensors")
    for r in results:
        print(format_table(r))             # or r.error, a one-line message naming the file
    write_json(results, "out.json"); write_csv(results, "out.csv")

How a video is scored
  * Features: made with the checkpoint's feature settings and weights (pipeline/apps/predictor.py).
  * Memory: the video is streamed (pipeline/extract/stream.py: decoding in a thread ahead of the
    extractors); the frames of at most 2 x `batch_size / K` segments are held at a time,
    only the features of the last W segments are kept (a ring buffer; no float16 copy of
    the whole video is needed), and windows go through the model 16 at a time, so memory
    does not grow with the video's length. Per-second results (a few floats a second) are
    all that accumulates. Measured on CPU: peak RSS 1299 MiB for 60 s, 1332 MiB for 600 s
    (same settings), flat during the run.
  * Windows: the model was trained on W-segment sequences (W = the checkpoint's forced
    segment count, else AVE's 10; `window_s` overrides). A longer video is scored in
    W-long windows every `stride_s` seconds (default 5 = W/2: every second of an AVE-length
    stretch is seen by two windows, one where it sits early and one where it sits late),
    and a last window ends at the video's end, so the tail is always covered
    (`window_starts`). Each second's class probabilities and relevances (DAM's p_t and its
    audio and visual parts) are averaged over the windows that cover it.
  * Short videos (fewer than W whole seconds): every SEL model here accepts any T (the
    self-attention embedding, the Bi-LSTMs and the cell attention have no fixed length),
    so the model runs once on the T segments there are; nothing is padded (padding with
    repeated or silent segments would add content the global features then average in).
  * Scores: the model's own `score_segments` (models/inference.py) on each window.
  * Labels, DAM's rule: a second is background when its (averaged) relevance is < 0.5,
    else the category with the highest averaged probability. `probability` is that
    category's probability (for a background second too: the category the event would
    have). Models without relevance (AV_att; DAM with matching "none" or lam = 1) label a
    second by the argmax over their classes (AV_att's include background) and report
    relevance as null.
  * Events: consecutive seconds with the same non-background label are merged into one
    interval (`merge_intervals`); its score is the mean over its seconds of
    relevance x probability, the chance that the second is an event AND of that category
    (probability alone when the model has no relevance). In [0, 1]; higher is surer.
  * The rule's knobs (stride, how windows combine, smoothing, gap filling, minimum event
    length, event score, minimum score): `LocalizeRule` (pipeline/apps/windows.py); its
    defaults are the rule above. `localize_features` runs the same windows and rule on
    features (no decoding: long generated feature sets, benchmarks/long_videos.py).

Failures: `localize` never stops at a bad video. A video that cannot be decoded (missing,
not media, corrupt, no audio stream, shorter than 1 s...) gives a result whose `.error` is
the one-line message naming the file and `.error_kind` the MediaError kind; the other
videos go on. Errors that concern every video (wrong-task checkpoint: CheckpointError;
weights that differ from the checkpoint's: SettingsMismatch; a bad option: AvelError) are
raised before any video is read.

Output (pipeline/apps/outputs.py): the JSON schema is the README's ("Localizing events in
your videos"); `to_dict` writes it and tests/test_localize.py checks it against the README's
example. The windows and the rules above that combine them: pipeline/apps/windows.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ...core.errors import AvelError, CheckpointError, ConfigError, NonFiniteScores, shown
from ...models.inference import SegmentScores
from ...models.protocols import SELModel
from ...models.registry import SEL_TASKS
from ..extract.stream import FeatureStream
from ..train.checkpoint import Checkpoint, load_checkpoint
from .outputs import ModelInfo, SecondResult, VideoLocalization
from .predictor import Predictor
from .windows import LocalizeRule, PerSecond, Scorer, WindowedScorer, apply_rule, label_seconds, smooth_seconds

AVE_WINDOW_S = 10  # AVE's T: the length of every training sequence
DEFAULT_STRIDE_S = LocalizeRule.stride_s


# -----------------------------------------------------------------------------------------
# the model as a function of feature windows
def segment_scorer(model: SELModel, device: torch.device) -> Scorer:
    """The model's `score_segments` on numpy windows (float32 on `device`)."""
    if not isinstance(model, SELModel):
        raise CheckpointError(f"no localization rule for the SEL model {type(model).__name__}")

    def score(audio: np.ndarray, visual: np.ndarray) -> SegmentScores:
        return model.score_segments(
            torch.from_numpy(audio).to(device).float(), torch.from_numpy(visual).to(device).float()
        )

    return score


# -----------------------------------------------------------------------------------------
# the window of a checkpoint
def checkpoint_window(checkpoint: Checkpoint) -> int:
    """The sequence length the model was trained on: the checkpoint's forced segment count
    (AVE exports and `--segments N` caches), else AVE's 10."""
    settings = checkpoint.feature_settings
    if settings is not None and settings.segments:
        return int(settings.segments)
    return AVE_WINDOW_S


# -----------------------------------------------------------------------------------------
# localization
def _check_finite(per: PerSecond, where: str) -> None:
    for name, x in (
        ("class", per.probs),
        ("relevance", per.relevance),
        ("audio relevance", per.audio_relevance),
        ("visual relevance", per.visual_relevance),
    ):  # NaN would label every second an event
        if x is not None and not np.isfinite(x).all():
            t = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(1))[0])
            raise NonFiniteScores(
                f"{where}: the model's {name} scores are NaN or infinite (first at second "
                f"{t}); no events given (broken weights, or an fp16 overflow?)"
            )


def result_from_scores(
    path: str, duration_s: float, per: PerSecond, info: ModelInfo, rule: LocalizeRule, features: dict | None
) -> VideoLocalization:
    """Per-second window outputs -> the video's result, by `rule`."""
    _check_finite(per, shown(path))
    probs, rel = (
        smooth_seconds(per.probs, rule.smooth_k, rule.smooth),
        smooth_seconds(per.relevance, rule.smooth_k, rule.smooth),
    )
    audio_rel = smooth_seconds(per.audio_relevance, rule.smooth_k, rule.smooth)
    visual_rel = smooth_seconds(per.visual_relevance, rule.smooth_k, rule.smooth)
    labels, prob = label_seconds(probs, rel, info.classes)

    def at(x, t):
        return None if x is None else float(x[t])

    seconds = [
        SecondResult(t, t + 1, labels[t], float(prob[t]), at(rel, t), at(audio_rel, t), at(visual_rel, t))
        for t in range(len(labels))
    ]
    return VideoLocalization(
        video=path,
        duration_s=float(duration_s),
        segments=seconds,
        events=apply_rule(labels, prob, rel, rule),
        model=info,
        features=features,
    )


def _localize_one(
    path: str, predictor: Predictor, info: ModelInfo, progress: bool, rule: LocalizeRule
) -> VideoLocalization:
    scorer = WindowedScorer(
        segment_scorer(predictor.model, predictor.extractor.device), info.window, info.stride, combine=rule.combine
    )
    stream = FeatureStream(path, predictor.extractor, progress=progress)
    for audio, visual in stream:
        scorer.push(audio, visual.reshape(-1, visual.shape[-1]))  # (N = h*w cells, Dv)
    return result_from_scores(path, stream.duration_s, scorer.finish(), info, rule, predictor.settings.to_dict())


def model_info(
    checkpoint: str | os.PathLike, ckpt: Checkpoint, stride_s: int, window_s: int | None = None
) -> ModelInfo:
    """What a result says of the model that made it; ConfigError for a window or stride out of range."""
    if window_s is not None and window_s < 1:
        raise ConfigError("window", window_s, "must be >= 1 s")
    path = os.fspath(checkpoint)
    window = int(window_s) if window_s is not None else checkpoint_window(ckpt)
    if not 1 <= stride_s <= window:
        raise ConfigError(
            "stride", stride_s, f"must lie in 1..{window} s (the window length), or seconds would be skipped"
        )
    cfg = ckpt.model_config
    info = ModelInfo(
        task=cfg.task,
        model=cfg.name,
        embedding=getattr(cfg, "embedding", None),
        matching=getattr(cfg, "matching", None),
        window=window,
        stride=int(stride_s),
        checkpoint=path,
        classes=tuple(ckpt.class_names),
        features_from_checkpoint=ckpt.feature_settings is not None,
    )
    if len(info.classes) != cfg.num_classes - 1:
        raise CheckpointError(f"{path}: {len(info.classes)} class names for a {cfg.num_classes}-class model")
    return info


def localize_features(
    video: str,
    blocks,
    model: SELModel,
    info: ModelInfo,
    rule: LocalizeRule | None = None,
    *,
    device: str | torch.device = "cpu",
) -> VideoLocalization:
    """Localize events in a video given as features, with no decoding: `blocks` yields
    (audio [B, Da], visual [B, h, w, Dv] or [B, N, Dv]) blocks of consecutive seconds (e.g.
    pipeline/data/synth_long.py's `feature_blocks`, without their start; or one block, the
    whole video). The same windows (`info.window`; the stride: `info.stride`) and rule as
    `localize`; memory as there: the last window's features and the per-second scores. The
    model is put in eval mode; `info` is `model_info` of its checkpoint (or one made by
    hand, for a model trained in memory)."""
    rule = rule or LocalizeRule(stride_s=info.stride)
    device = torch.device(device)
    model.eval()
    scorer = WindowedScorer(segment_scorer(model, device), info.window, info.stride, combine=rule.combine)
    with torch.no_grad():
        for audio, visual in blocks:
            audio, visual = np.asarray(audio), np.asarray(visual)
            visual = visual.reshape(len(visual), -1, visual.shape[-1])
            for t in range(len(audio)):
                scorer.push(audio[t], visual[t])
        per = scorer.finish()
    return result_from_scores(video, float(scorer.num_segments), per, info, rule, None)


def error_line(path: str, e: BaseException) -> str:
    """One line naming the file, for any exception a video can raise."""
    if isinstance(e, AvelError):
        text = str(e)
        return text if path in text else f"{path}: {text}"
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{path}: {type(e).__name__}: {first}".rstrip(": ")


def localize(
    videos: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    *,
    stride_s: int | None = None,
    window_s: int | None = None,
    progress: bool = True,
    rule: LocalizeRule | None = None,
    **options,
) -> list[VideoLocalization]:
    """Localize events in every video with the SEL checkpoint; one result per video, in
    order. `rule`: how per-second scores become events (LocalizeRule; default: the rule
    above); `stride_s`, when given, overrides the rule's stride. `options`: how to run it
    (`Predictor.build`: device, visual_weights_file, audio_weights_file, audio_pca_file,
    precision, on_missing_audio, batch_size). A video that fails gives a result with `.error`
    set (one line naming it) and the others go on. Raises, before reading any video:
    CheckpointError (no such file, not a SEL checkpoint...), SettingsMismatch (weights that
    differ from the checkpoint's), ConfigError (stride/window, device or precision)."""
    rule = rule or LocalizeRule()
    stride_s = rule.stride_s if stride_s is None else stride_s
    path = os.fspath(checkpoint)
    ckpt = load_checkpoint(path, expected_task=SEL_TASKS)  # a weakly trained (wsel) model is a SEL model at test time
    info = model_info(path, ckpt, stride_s, window_s)
    predictor = Predictor.build(path, ckpt, **options)
    results = []
    for video in videos:
        path = os.fspath(video)
        try:
            results.append(_localize_one(path, predictor, info, progress, rule))
        except Exception as e:  # anything an odd file can raise: recorded, never fatal (as in extract)
            results.append(
                VideoLocalization(
                    video=path, model=info, error=error_line(path, e), error_kind=getattr(e, "kind", "error")
                )
            )
    return results
