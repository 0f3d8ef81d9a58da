"""--convert device: one video's chosen frames, as yuv420p planes (pipeline/media/decode.py's
`PlaneConverter`), become S x S RGB on the model's device in one batched op per batch.

Built to match swscale's own path (`RgbConverter`: SWS_BILINEAR, yuv420p -> rgb24), which
scales each plane to the output size and converts afterwards:
- each plane is resized by a separable matrix product: bilinear, the triangle widened by the
  shrink factor when shrinking (swscale's SWS_BILINEAR, and torch's antialias=True), pixel
  centres aligned (no crop, aspect not kept: AVE's direct resize);
- chroma is resized to S rows but only S / 2 columns, each shared by two pixels: swscale's
  packed-RGB output has no full horizontal chroma interpolation (measured: with full
  interpolation the difference to swscale triples), from where the codec sites it (left
  for H.264, HEVC, MPEG-2 and MPEG-4: 1/4 chroma pixel; measured, mean difference 0.6
  level instead of 3 on AVE-like h264);
- a picture already S x S is not resized; its chroma is repeated on 2 x 2 pixels (swscale's
  unscaled path does that);
- YUV -> RGB with the video's luma weights (kr, kb) and range (limited range less swscale's
  measured 1.8-level offset), rounded and clipped to uint8.
The result is a few levels from swscale's (its 14-bit fixed-point filters and tables;
tests/test_convert.py states the tolerance, benchmarks/convert.py measures it on AVE-like video)."""

from __future__ import annotations

from functools import lru_cache

import torch

from ..media.decode import PlaneFormat

# swscale's limited-range yuv420p -> rgb24 (its default, table-driven path) gives 1.8 levels less
# than the BT.601 / BT.709 formulas: measured on a flat picture for every Y in 16..235 (3 of 220
# values one level apart with this offset, 216 of them 1 to 2 levels apart without it)
SWSCALE_LIMITED_BIAS = 1.8


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, device: str, shift: float = 0.0) -> torch.Tensor:
    """[n_out, n_in] float32: bilinear resampling, widened to the shrink factor when shrinking
    (`shift`: where the input samples sit, in input pixels, left of their pixels' centres)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5 + shift
    taps = (1 - (torch.arange(n_in, dtype=torch.float64)[None] - centre[:, None]).abs() / support).clamp(min=0)
    return (taps / taps.sum(1, keepdim=True)).float().to(device)


def planes_to_rgb(planes: torch.Tensor, fmt: PlaneFormat, size: int) -> torch.Tensor:
    """planes [N, >= fmt.nbytes] uint8 (on any device) -> [N, size, size, 3] uint8 RGB."""
    n, w, h = planes.shape[0], fmt.width, fmt.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    device = str(planes.device)
    x = planes[:, : fmt.nbytes].float()
    y = x[:, : w * h].reshape(n, h, w)
    uv = x[:, w * h :].reshape(n, 2, ch, cw)
    if (w, h) == (size, size):  # swscale's unscaled path: each chroma sample on its 2 x 2 pixels
        uv = uv.repeat_interleave(2, dim=2)[:, :, :size].repeat_interleave(2, dim=3)[..., :size]
    else:
        y = resize_matrix(h, size, device) @ y @ resize_matrix(w, size, device).T  # [N, S, S]
        shift = 0.25 if fmt.chroma_left else 0.0  # a left-sited chroma sample sits on its first luma column
        half = resize_matrix(cw, (size + 1) // 2, device, shift).repeat_interleave(2, 0)[:size]  # 2 pixels a column
        uv = resize_matrix(ch, size, device) @ uv @ half.T  # [N, 2, S, S]
    u, v = uv[:, 0] - 128.0, uv[:, 1] - 128.0
    if not fmt.full_range:
        y, u, v = (y - 16.0) * (255.0 / 219.0) - SWSCALE_LIMITED_BIAS, u * (255.0 / 224.0), v * (255.0 / 224.0)
    kr, kb = fmt.kr, fmt.kb
    kg = 1.0 - kr - kb
    rgb = torch.stack(
        [y + 2 * (1 - kr) * v, y - (2 * kb * (1 - kb) / kg) * u - (2 * kr * (1 - kr) / kg) * v, y + 2 * (1 - kb) * u],
        dim=-1,
    )
    out = rgb.round_().clamp_(0, 255).to(torch.uint8)
    if fmt.quarter_turns:
        out = torch.rot90(out, fmt.quarter_turns, dims=(1, 2))
    return out
