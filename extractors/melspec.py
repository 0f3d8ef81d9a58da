"""The VGGish log-mel front end (REFERENCE.md section 2) as pure, batched torch functions.

Everything runs on the device of the input waveform. The spectrum is computed in float64
(float32 where the device has no float64, e.g. MPS) and returned as float32, with autocast
switched off: the front end must stay full precision even when the network that follows
runs under bf16/fp16 autocast (a bf16 log-mel would move features by ~1e-2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.config import SAMPLE_RATE_HZ

# VGGish parameters (AudioSet release): 25 ms windows, 10 ms hop, 64 mel bands.
WINDOW_SAMPLES = 400  # 25 ms at 16 kHz
HOP_SAMPLES = 160  # 10 ms at 16 kHz
FFT_SIZE = 512  # next power of two >= WINDOW_SAMPLES
FFT_BINS = FFT_SIZE // 2 + 1  # 257
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s per example
EXAMPLE_HOP_FRAMES = 96  # no overlap
# Samples one example needs: 400 + 95 * 160 = 15600 (0.975 s).
EXAMPLE_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: 1127 * ln(1 + f / 700)."""
    return 1127.0 * torch.log(1.0 + hz / 700.0)


def mel_matrix(
    *,
    num_bands: int = MEL_BANDS,
    num_fft_bins: int = FFT_BINS,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    lower_hz: float = MEL_LOW_HZ,
    upper_hz: float = MEL_HIGH_HZ,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """[num_fft_bins, num_bands] weights that post-multiply a magnitude spectrum.

    Bin centres are linspace(0, sr/2, num_fft_bins); num_bands + 2 edges evenly spaced in
    HTK mel between lower_hz and upper_hz; each band is a triangle, linear in mel, with peak
    1 and no area normalisation; the DC row is zero (HTK ignores the DC bin)."""
    nyquist_hz = sample_rate_hz / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist_hz:
        raise ValueError(
            f"mel band edges must satisfy 0 <= lower ({lower_hz}) < upper ({upper_hz}) <= Nyquist ({nyquist_hz})"
        )
    # Built in float64 on the CPU (tiny), then moved: identical on every device.
    bins_mel = hz_to_mel(torch.linspace(0.0, nyquist_hz, num_fft_bins, dtype=torch.float64))
    lo_mel, hi_mel = hz_to_mel(torch.tensor([lower_hz, upper_hz], dtype=torch.float64)).tolist()
    edges_mel = torch.linspace(lo_mel, hi_mel, num_bands + 2, dtype=torch.float64)
    lower, centre, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]  # [B] each
    b = bins_mel[:, None]  # [K, 1]
    rising = (b - lower) / (centre - lower)  # [K, B]
    falling = (upper - b) / (upper - centre)  # [K, B]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [K, B]
    weights[0, :] = 0.0
    return weights.to(device=device, dtype=dtype)


def periodic_hann(length: int, *, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """0.5 - 0.5 cos(2 pi n / length), n = 0..length-1 (one full period, no final zero)."""
    n = torch.arange(length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2.0 * math.pi / length * n)).to(device=device, dtype=dtype)


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_waveform(waveform: Tensor) -> None:
    if waveform.dim() != 2:
        raise ValueError(f"expected waveforms [N, S], got shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise TypeError(f"expected float waveforms in [-1, 1], got {waveform.dtype}")


def log_mel_frames(waveform: Tensor) -> Tensor:
    """Log-mel frames of 16 kHz mono waveforms.

    waveform: [N, S] float, 16 kHz, values in [-1, 1].
    returns:  [N, F, 64] float32 with F = 1 + (S - 400) // 160 (0 when S < 400);
    no centring or padding, so frame f covers samples [160 f, 160 f + 400)."""
    _check_waveform(waveform)
    n, s = waveform.shape
    device = waveform.device
    dtype = _compute_dtype(device)
    if s < WINDOW_SAMPLES:
        return torch.empty(n, 0, MEL_BANDS, dtype=torch.float32, device=device)
    with torch.autocast(device_type=device.type, enabled=False):  # keep full precision
        x = waveform.to(dtype)  # [N, S]
        frames = x.unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES)  # [N, F, 400] (a view)
        frames = frames * periodic_hann(WINDOW_SAMPLES, dtype=dtype, device=device)
        spectrum = torch.fft.rfft(frames, n=FFT_SIZE, dim=-1).abs()  # [N, F, 257] magnitude
        mel = spectrum @ mel_matrix(dtype=dtype, device=device)  # [N, F, 64]
        return torch.log(mel + LOG_OFFSET).to(torch.float32)


def log_mel_examples(waveform: Tensor) -> Tensor:
    """VGGish input examples of 16 kHz mono waveforms.

    waveform: [N, S] float, 16 kHz.
    returns:  [N, E, 96, 64] float32: consecutive, non-overlapping 96-frame (0.96 s)
    patches of `log_mel_frames`; an incomplete tail is dropped (E = 0 for S < 15600)."""
    frames = log_mel_frames(waveform)  # [N, F, 64]
    n, f, bands = frames.shape
    e = 0 if f < EXAMPLE_FRAMES else 1 + (f - EXAMPLE_FRAMES) // EXAMPLE_HOP_FRAMES
    # hop == window, so the examples are the first e * 96 frames cut into blocks
    return frames[:, : e * EXAMPLE_FRAMES].reshape(n, e, EXAMPLE_FRAMES, bands)  # [N, E, 96, 64]
