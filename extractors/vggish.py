"""VGGish (AudioSet, 2018) as AVE used it: one 128-d embedding per 1-s slice of 16 kHz
mono audio, the raw output of the last fully connected layer after its ReLU. Optional
PCA + 8-bit quantisation (the AudioSet release's post-processing) is off by default
(AVE's audio_feature.h5 has none).

Weights load with `torch.load(weights_only=True)` only: a weight file can never run code.
Registered builders (keyword-only): AUDIO_MODELS "vggish" (public weights) and "random"
(seeded, deterministic weights, for tests and dry runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..core.config import SAMPLE_RATE_HZ
from ..core.errors import WeightsError
from ..core.weights import WeightsEntry, resolve_weights, sha256_of
from .melspec import EXAMPLE_FRAMES, EXAMPLE_SAMPLES, MEL_BANDS, log_mel_examples
from .registry import AUDIO_MODELS, random_weights_tag

EMBEDDING_SIZE = 128

VGGISH_WEIGHTS = WeightsEntry(
    name="VGGish (AudioSet, PyTorch port of the TF checkpoint)",
    file_name="vggish-10086976.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    sha256_prefix="10086976",
    option="--audio-weights-file",
)
VGGISH_PCA = WeightsEntry(
    name="VGGish PCA parameters (AudioSet post-processing)",
    file_name="vggish_pca_params-970ea276.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth",
    sha256_prefix="970ea276",
    option="--audio-pca-file",
)

# Output channels of each 3x3 conv ("M" = 2x2 max-pool). The nn.Sequential indices this
# yields (conv at 0, 3, 6, 8, 11, 13) are the key names of the public state dict.
_CONV_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
_POOL4_HWC = (6, 4, 512)  # pool4 of a [96, 64] input, NHWC


class VGGish(nn.Module):
    """The VGGish network. Input log-mel examples [N, 1, 96, 64] -> embeddings [N, 128]
    (after the final ReLU, so non-negative). State-dict keys are those of the public
    `vggish-10086976.pth`: features.{0,3,6,8,11,13}.*, embeddings.{0,2,4}.*."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for v in _CONV_PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU()]
                channels = v
        self.features = nn.Sequential(*layers)
        flat = _POOL4_HWC[0] * _POOL4_HWC[1] * _POOL4_HWC[2]  # 12288
        self.embeddings = nn.Sequential(
            nn.Linear(flat, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        # x: [N, 1, 96, 64] log-mel examples (time, mel band)
        x = self.features(x)  # [N, 512, 6, 4]
        # the TF model flattens NHWC: permute before flattening, as the fc weights expect
        return x.permute(0, 2, 3, 1).flatten(1)  # [N, 6*4*512 = 12288]

    def forward_head(self, x: Tensor) -> Tensor:
        # x: [N, 12288]
        return self.embeddings(x)  # [N, 128]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class VGGishPCA(nn.Module):
    """AudioSet post-processing: E @ (x - mean), clip to [-2, 2], map to 0..255 and round.
    x: [N, 128] -> [N, 128] float32 holding integer values 0..255. Always float32 with
    autocast off: a bf16 projection would move values across rounding boundaries."""

    def __init__(self, eigen_vectors: Tensor, means: Tensor) -> None:
        super().__init__()
        self.register_buffer("eigen_vectors", eigen_vectors.to(torch.float32).clone())  # [128, 128]
        self.register_buffer("means", means.reshape(-1).to(torch.float32).clone())  # [128]

    def project(self, x: Tensor) -> Tensor:
        """[N, 128] -> [N, 128] PCA projection clipped to [-2, 2], before quantisation."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(torch.float32) - self.means  # [N, 128]
            return torch.clamp(x @ self.eigen_vectors.T, -2.0, 2.0)  # [N, 128]

    def forward(self, x: Tensor) -> Tensor:
        return torch.round((self.project(x) + 2.0) * (255.0 / 4.0))


class VGGishExtractor(nn.Module):
    """Waveforms [N, 16000] (16 kHz mono float, one 1-s segment each) -> [N, 128].

    Each slice gives one example: its first 96 log-mel frames (0.975 s of the 98 frames
    a second holds), as AVE's features were made. The front end stays float32 on the
    network's device (autocast off inside it); the network may run in bf16/fp16 under
    autocast or after `.to(dtype)`; the output is float32."""

    def __init__(
        self,
        network: VGGish,
        pca: VGGishPCA | None = None,
        *,
        weights_sha256: str,
        pca_sha256: str = "",
    ) -> None:
        super().__init__()
        self.network = network
        self.pca = pca
        self.weights_sha256 = weights_sha256
        self.pca_sha256 = pca_sha256 if pca is not None else ""

    def front_end(self, waveform: Tensor) -> Tensor:
        """[N, 16000] float waveforms -> [N, 1, 96, 64] float32 log-mel examples."""
        if waveform.dim() != 2 or waveform.shape[1] != SAMPLE_RATE_HZ:
            raise ValueError(f"expected 1-s 16 kHz segments [N, {SAMPLE_RATE_HZ}], got {tuple(waveform.shape)}")
        first = self.network.features[0].weight
        waveform = waveform.to(first.device)
        # 15600 samples make exactly the first 96 frames (the rest of the second is unused)
        examples = log_mel_examples(waveform[:, :EXAMPLE_SAMPLES])  # [N, 1, 96, 64]
        return examples.reshape(-1, 1, EXAMPLE_FRAMES, MEL_BANDS)

    def forward(self, waveform: Tensor) -> Tensor:
        # waveform: [N, 16000] float, 16 kHz mono
        x = self.front_end(waveform)  # [N, 1, 96, 64] float32
        param_dtype = self.network.features[0].weight.dtype
        emb = self.network(x.to(param_dtype)).float()  # [N, 128]
        return self.pca(emb) if self.pca is not None else emb


# --- loading ----------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _torch_load(path: Path, *, allow_numpy: bool = False):
    """torch.load with weights_only=True; any failure becomes a one-line WeightsError."""
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, KeyError, ...
        text = str(e)
        if "Weights only load failed" in text:
            reason = _unpickler_reason(text)
            problem = "refused: it holds pickled objects other than tensors, which could run code"
            problem += f" ({reason})" if reason else ""
        else:
            problem = f"not a readable torch file ({_first_line(e)})"
        raise WeightsError(f"{path}: {problem}") from None


def _unpickler_reason(text: str) -> str:
    """The one informative line of torch's long weights_only refusal message."""
    for line in text.splitlines()[1:]:
        line = line.replace("WeightsUnpickler error:", "").strip()
        if line and not line.startswith(("Please file an issue", "Check the documentation")):
            return line.split(". ")[0][:200]
    return ""


def _numpy_globals() -> list:
    """The only numpy globals a file of plain numpy arrays needs (the public PCA file),
    under both the numpy >= 2 and the numpy 1.x module names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed: list = [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    for code in ("f4", "f8"):
        dtype_class = type(np.dtype(code))  # numpy.dtypes.Float64DType (numpy >= 1.25)
        if dtype_class is not np.dtype:
            allowed.append(dtype_class)
    return allowed


def _expected_shapes() -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in VGGish().state_dict().items()}


def _check_state_dict(obj, path: Path) -> dict[str, Tensor]:
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    expected = _expected_shapes()
    missing = [k for k in expected if k not in obj]
    if missing:
        raise WeightsError(f"{path}: not VGGish weights: missing keys {', '.join(missing)}")
    unexpected = [str(k) for k in obj if k not in expected]
    if unexpected:
        raise WeightsError(f"{path}: not VGGish weights: unexpected keys {', '.join(unexpected)}")
    for k, shape in expected.items():
        v = obj[k]
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise WeightsError(f"{path}: {k} is not a float tensor")
        if v.shape != shape:
            raise WeightsError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(shape)}")
        if not torch.isfinite(v).all():
            raise WeightsError(f"{path}: {k} holds non-finite values")
    return {k: obj[k].to(torch.float32).contiguous() for k in expected}


def _network(state_dict: dict[str, Tensor]) -> VGGish:
    """A VGGish holding exactly these (checked) tensors; no wasted random init."""
    with torch.device("meta"):
        net = VGGish()
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.eval()


def load_vggish(path: str | os.PathLike) -> VGGish:
    """A VGGish network from a state-dict file laid out as `vggish-10086976.pth`."""
    path = Path(path)
    return _network(_check_state_dict(_torch_load(path), path))


def load_pca(path: str | os.PathLike) -> VGGishPCA:
    """PCA parameters from a file laid out as `vggish_pca_params-970ea276.pth`: a
    torch.save'd dict of numpy arrays (tensors accepted too)."""
    path = Path(path)
    obj = _torch_load(path, allow_numpy=True)
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of PCA parameters, found {type(obj).__name__}")
    tensors = {}
    for key, shape in (("pca_eigen_vectors", (128, 128)), ("pca_means", (128,))):
        if key not in obj:
            raise WeightsError(f"{path}: not VGGish PCA parameters: missing key {key}")
        try:
            t = torch.as_tensor(np.asarray(obj[key], dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: {key} is not a numeric array ({_first_line(e)})") from None
        if t.numel() != int(np.prod(shape)) or (key == "pca_eigen_vectors" and t.shape != shape):
            raise WeightsError(f"{path}: {key} has shape {tuple(t.shape)}, expected {shape}")
        if not torch.isfinite(t).all():
            raise WeightsError(f"{path}: {key} holds non-finite values")
        tensors[key] = t
    return VGGishPCA(tensors["pca_eigen_vectors"], tensors["pca_means"]).eval()


def random_state_dict(seed: int) -> dict[str, Tensor]:
    """Seeded He-normal weights and zero biases, drawn in a fixed order from a CPU
    torch.Generator: the same seed gives the same tensors on every machine."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in _expected_shapes().items():
        if k.endswith(".bias"):
            out[k] = torch.zeros(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return out


def _pca_for(pca_file: str | os.PathLike | None) -> tuple[VGGishPCA | None, str]:
    if pca_file is None:
        return None, ""
    download = isinstance(pca_file, str) and pca_file == "download"
    path = resolve_weights(VGGISH_PCA, None if download else pca_file)
    return load_pca(path), sha256_of(path)


@AUDIO_MODELS.register("vggish")
def build_vggish(
    *,
    weights_file: str | os.PathLike | None = None,
    pca_file: str | os.PathLike | None = None,
    seed: int = 0,  # unused: the weights are fixed
) -> VGGishExtractor:
    """VGGish with the public weights (explicit file, cache, or verified download).
    pca_file: None (AVE: raw embeddings), a path, or "download" for the public PCA file."""
    path = resolve_weights(VGGISH_WEIGHTS, weights_file)
    pca, pca_sha256 = _pca_for(pca_file)  # small: fail on it before the 290 MB load
    network = load_vggish(path)
    return VGGishExtractor(network, pca, weights_sha256=sha256_of(path), pca_sha256=pca_sha256)


@AUDIO_MODELS.register("random")
def build_random(
    *,
    weights_file: str | os.PathLike | None = None,
    pca_file: str | os.PathLike | None = None,
    seed: int = 0,
) -> VGGishExtractor:
    """VGGish architecture with seeded random weights (no download; for tests and dry
    runs). weights_file must be None."""
    if weights_file is not None:
        raise WeightsError(f"{weights_file}: the random audio model takes no weight file")
    pca, pca_sha256 = _pca_for(pca_file)
    network = _network(random_state_dict(seed))
    return VGGishExtractor(network, pca, weights_sha256=random_weights_tag(seed), pca_sha256=pca_sha256)
