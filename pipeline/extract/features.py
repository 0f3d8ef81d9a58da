"""`FeatureExtractor`: the visual and the audio extractor of a `FeatureSettings`, on one
device, turning batches of decoded segments into features. No files, no decoding: frames
and waveforms in, features out. Extraction jobs (pipeline/extract/local.py), localization and
CML queries (pipeline/apps/predictor.py) all build their extractors here."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ... import extractors  # noqa: F401  (registers the extractors)
from ...core.config import FeatureSettings, resolve_device
from ...core.errors import ConfigError
from ...extractors.registry import AUDIO_MODELS, VISUAL_MODELS, AudioExtractor, VisualExtractor
from ..media.decode import PlaneFormat
from .yuv import planes_to_rgb

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # keys: config.PRECISIONS
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass(frozen=True)
class VisualSetting:
    """How VGG-19 runs on a device: frames per forward and the tensors' memory format.
    Neither changes what a feature is (batches never mix videos; tests/test_precision.py)."""

    batch_size: int
    memory_format: str = "channels_last"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "must be >= 1")
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError("memory_format", self.memory_format, f"choose one of: {', '.join(MEMORY_FORMATS)}")


# The default per device type: the fastest setting the ceiling stage of benchmarks/bench.py
# measured (it tries every candidate and says when this table is not the fastest).
# CPU (2-core AMD EPYC, torch 2.14, fp32 and bf16): batch 16, channels_last, as fast as
# batch 160 with a third of the memory, and 1.2x the NCHW layout. CUDA: not measured yet
# (no GPU was available); batch 160 is one AVE video at 16 frames a segment.
DEVICE_DEFAULTS = {"cpu": VisualSetting(16), "cuda": VisualSetting(160)}
CANDIDATES = {  # what the benchmark tries per device type
    "cpu": [VisualSetting(b, f) for b in (8, 16, 32) for f in MEMORY_FORMATS] + [VisualSetting(160)],
    "cuda": [VisualSetting(b, f) for b in (32, 64, 128, 160, 256) for f in MEMORY_FORMATS],
}


@contextlib.contextmanager
def ieee_fp32():
    """cuDNN convolutions in IEEE float32 (not TF32) inside the block."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        before, conv.fp32_precision = conv.fp32_precision, "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = before
    else:  # older torch
        before, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before


class FeatureExtractor:
    """Both extractors on one device. `settings` in, settings with the weights' SHA-256
    filled in out (`self.settings`): that is what a cache records. `batch_size` and
    `memory_format` default to the device's entry in DEVICE_DEFAULTS."""

    def __init__(
        self,
        settings: FeatureSettings,
        *,
        visual_weights_file: str | None = None,
        audio_weights_file: str | None = None,
        audio_pca_file: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        memory_format: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        default = DEVICE_DEFAULTS.get(self.device.type, DEVICE_DEFAULTS["cpu"])
        if settings.precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("precision", "fp16", "needs a GPU; use bf16 or fp32 on the CPU")
        visual_builder = VISUAL_MODELS.get(settings.visual_model)  # unknown names fail before any weight is read
        audio_builder = AUDIO_MODELS.get(settings.audio_model)
        if settings.audio_pca and audio_pca_file is None:
            audio_pca_file = "download"
        torch.manual_seed(settings.seed)
        self.visual: VisualExtractor = visual_builder(weights_file=visual_weights_file, seed=settings.seed)
        self.audio: AudioExtractor = audio_builder(
            weights_file=audio_weights_file,
            pca_file=audio_pca_file if settings.audio_pca else None,
            seed=settings.seed,
        )
        self.visual.eval().to(self.device)
        self.set_visual_setting(
            VisualSetting(
                default.batch_size if batch_size is None else batch_size, memory_format or default.memory_format
            )
        )
        self.audio.eval().to(self.device)
        self.settings = dataclasses.replace(
            settings,
            visual_weights_sha256=self.visual.weights_sha256,
            audio_weights_sha256=self.audio.weights_sha256,
            audio_pca_sha256=self.audio.pca_sha256,
        )
        self._autocast = AUTOCAST_DTYPES[settings.precision]
        self._visual_call, self._audio_call = self.visual, self.audio  # torch.compile'd by `compile()`
        self.compile_mode = "off"
        self._staging: list = []  # CUDA: pinned host buffers of one batch, reused (with their copy events)
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def compile(self, mode: str = "default") -> None:
        """Run both networks through torch.compile from now on (`mode`: default |
        max-autotune; off: eager again). The first batch of each shape compiles (seconds to
        minutes); features equal eager's within float tolerance (tests/test_overlap.py)."""
        if mode not in ("off", "default", "max-autotune"):
            raise ConfigError("compile", mode, "choose one of: off, default, max-autotune")
        if mode == self.compile_mode:
            return
        self.compile_mode = mode
        if mode == "off":
            self._visual_call, self._audio_call = self.visual, self.audio
            return
        self._visual_call = torch.compile(self.visual, mode=mode, dynamic=False)
        self._audio_call = torch.compile(self.audio, mode=mode, dynamic=False)

    def set_visual_setting(self, setting: VisualSetting) -> None:
        """Run VGG-19 with this batch size and memory format from now on (weights and input)."""
        fmt = MEMORY_FORMATS[setting.memory_format]
        self.visual.to(memory_format=fmt)
        self.visual.input_memory_format = fmt
        self.visual_setting = setting

    @property
    def batch_size(self) -> int:
        return self.visual_setting.batch_size

    def autocast(self):
        """The precision setting's context: autocast for bf16 / fp16; for fp32 on a GPU, IEEE
        float32 convolutions (cuDNN would use TF32 on Ampere and later, 1e-3 off the CPU's)."""
        if self._autocast is not None:
            return torch.autocast(self.device.type, dtype=self._autocast)
        return ieee_fp32() if self.device.type == "cuda" else contextlib.nullcontext()

    def _net(self, which: str):
        """The network to call: the module itself, or its compiled form."""
        if self.compile_mode == "off":
            return getattr(self, which)
        return self._visual_call if which == "visual" else self._audio_call

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self.device.type != "cuda":
            return t
        # CUDA: through one of two pinned staging buffers (reused, not allocated per batch), on a
        # copy stream of its own, so that the copy of one batch runs while the model works on the other
        n = t.numel() * t.element_size()
        k = self._stage_next = (getattr(self, "_stage_next", -1) + 1) % 2
        while len(self._staging) <= k:
            self._staging.append([torch.empty(0, dtype=torch.uint8).pin_memory(), None])
        buffer, event = self._staging[k]
        if event is not None:
            event.synchronize()  # its previous copy is done: the buffer may be written
        if buffer.numel() < n:
            buffer = self._staging[k][0] = torch.empty(n, dtype=torch.uint8).pin_memory()
        staged = buffer[:n].view(t.dtype).view(t.shape)
        staged.copy_(t)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            out = staged.to(self.device, non_blocking=True)
            event = self._staging[k][1] = torch.cuda.Event()
            event.record(self._copy_stream)
        compute.wait_stream(self._copy_stream)
        out.record_stream(compute)
        return out

    @property
    def segments_per_batch(self) -> int:
        """Segments whose frames fill one VGG-19 batch (at least one)."""
        return max(1, self.batch_size // self.settings.frames_per_segment)

    @torch.inference_mode()
    def visual_features(self, frames: np.ndarray, planes: PlaneFormat | None = None) -> np.ndarray:
        """frames [T, K, S, S, 3] uint8 -> mean pool5 over the K frames [T, 7, 7, 512] float32.
        Frames of a video go through VGG-19 in chunks of `batch_size` (a video's features
        never depend on which other videos were processed: resumed runs are bit-identical).
        With `planes` (--convert device) frames are [T, K, bytes] yuv420p planes of that
        format, converted to S x S RGB on this device first (pipeline/extract/yuv.py)."""
        T, K = frames.shape[:2]
        flat = frames.reshape(T * K, *frames.shape[2:])
        if planes is not None:
            flat = flat[:, : planes.nbytes]  # only the bytes the planes fill go to the device
        out = []
        for i in range(0, T * K, self.batch_size):
            x = self._to_device(flat[i : i + self.batch_size])
            if planes is not None:
                x = planes_to_rgb(x, planes, self.settings.frame_size)
            with self.autocast():
                out.append(self._net("visual")(x).float())
        pool5 = torch.cat(out).reshape(T, K, *out[0].shape[1:])  # [T, K, 7, 7, 512]
        return pool5.mean(dim=1).cpu().numpy()

    @torch.inference_mode()
    def audio_features(self, audio: np.ndarray) -> np.ndarray:
        """audio [T, 16000] float32 -> VGGish embeddings [T, 128] float32."""
        with self.autocast():
            return self._net("audio")(self._to_device(np.ascontiguousarray(audio))).float().cpu().numpy()
