"""VGG-19 up to pool5: the visual extractor of AVE (Tian et al., ECCV 2018).

The network is torchvision's `vgg19().features` (modules `features.0` .. `features.36`),
so torchvision's state dicts and the Caffe-converted `vgg19-d01eb7cb.pth` load directly;
the Keras HDF5 release of the Caffe weights is mapped onto the same keys.

A weight set is a value (`VisualWeights`): where the file comes from plus the
preprocessing it was trained with. The registered builders in `VISUAL_MODELS`:

  caffe        Oxford/Caffe ImageNet weights (AVE's, the default). `--visual-weights-file`
               is the Keras HDF5 file or a PyTorch state dict of the same weights; without
               it the Keras file is taken from the cache or downloaded (MD5-checked).
  torchvision  torchvision's IMAGENET1K_V1 (a different, retrained model: it does not
               reproduce AVE's features) with torchvision's normalisation.
  random       seeded deterministic weights (tests, dry runs) with Caffe preprocessing.

Input: RGB uint8 frames [N, H, W, 3] (AVE: 224 x 224, resized without crop by the
decoder; H, W multiples of 32). Output: pool5 [N, H/32, W/32, 512] float32, HWC order
as in AVE's `visual_feature.h5`. Weight files are read with `torch.load(weights_only=True)`
or h5py: nothing is ever unpickled into code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..core.errors import WeightsError
from ..core.weights import WeightsEntry, resolve_weights, sha256_of
from .registry import VISUAL_MODELS, random_weights_tag

# --- the architecture ------------------------------------------------------------------
# torchvision `features.N` index of each conv, and its Keras layer name.
CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
KERAS_CONV_LAYERS: tuple[str, ...] = tuple(
    f"block{b}_conv{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1)
)
# (out, in) channels of each conv, in order
CONV_CHANNELS: tuple[tuple[int, int], ...] = tuple(
    zip((64, 64, 128, 128, 256, 256, 256, 256) + (512,) * 8, (3, 64, 64, 128, 128, 256, 256, 256, 256) + (512,) * 7)
)
CONV_KEYS: tuple[str, ...] = tuple(f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias"))
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# --- weight sets: file + preprocessing ----------------------------------------------------
@dataclass(frozen=True)
class Preprocessing:
    """uint8 RGB -> network input: optional RGB->BGR flip, `x / divisor`, then
    `(x - mean) / std` with mean/std in the network's channel order."""

    name: str
    bgr: bool
    divisor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CAFFE_PREPROCESSING = Preprocessing(
    "caffe", bgr=True, divisor=1.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0)
)
TORCHVISION_PREPROCESSING = Preprocessing(
    "torchvision",
    bgr=False,
    divisor=255.0,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


@dataclass(frozen=True)
class VisualWeights:
    name: str
    entry: WeightsEntry | None  # None: random weights
    preprocessing: Preprocessing
    source: str


CAFFE = VisualWeights(
    "caffe",
    WeightsEntry(
        name="VGG-19 Caffe (Keras HDF5)",
        file_name="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        url="https://github.com/fchollet/deep-learning-models/releases/download/v0.1/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="253f8cb515780f3b799900260a226db6",
        option="--visual-weights-file",
    ),
    CAFFE_PREPROCESSING,
    "Simonyan & Zisserman's Caffe ImageNet model as released with Keras; AVE's features",
)
_TV = torchvision.models.VGG19_Weights.IMAGENET1K_V1
TORCHVISION = VisualWeights(
    "torchvision",
    WeightsEntry(
        name="VGG-19 torchvision IMAGENET1K_V1",
        file_name=os.path.basename(_TV.url),  # vgg19-dcbb9e9d.pth
        url=_TV.url,
        sha256_prefix=os.path.basename(_TV.url).split("-")[1].split(".")[0],
        option="--visual-weights-file",
    ),
    TORCHVISION_PREPROCESSING,
    "torchvision's retrained VGG-19 (not AVE-compatible)",
)
RANDOM = VisualWeights("random", None, CAFFE_PREPROCESSING, "seeded Kaiming-normal init")

# SHA-256 prefixes of the two public PyTorch files, to refuse the wrong one for a model
_CAFFE_PTH_PREFIX = "d01eb7cb"  # vgg19-d01eb7cb.pth (Caffe-converted)


# --- the module -------------------------------------------------------------------------
class VGG19Pool5(nn.Module):
    """RGB uint8 frames [N, H, W, 3] -> pool5 [N, H/32, W/32, 512] float32 (HWC)."""

    def __init__(self, preprocessing: Preprocessing, weights_sha256: str = "") -> None:
        super().__init__()
        # exactly `torchvision.models.vgg19().features` (config "E"), without building
        # and initialising the 120M-parameter classifier that would be thrown away
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
        self.features.to(memory_format=torch.channels_last)
        self.input_memory_format = torch.channels_last  # set with the weights' (FeatureExtractor)
        self.preprocessing = preprocessing
        self.weights_sha256 = weights_sha256
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32), persistent=False)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] RGB 0..255 -> [N, 3, H, W] float32 in `input_memory_format`."""
        frames = torch.as_tensor(frames)
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected RGB frames [N, H, W, 3], got {tuple(frames.shape)}")
        x = frames.to(self.mean.device, non_blocking=True).to(torch.float32)  # (N, H, W, 3)
        if self.preprocessing.bgr:
            x = x.flip(-1)
        if self.preprocessing.divisor != 1.0:
            x = x / self.preprocessing.divisor
        x = (x - self.mean) / self.std  # (N, H, W, C), C in the network's order
        # (N, C, H, W): a view with channels_last strides, copied only for another layout
        return x.permute(0, 3, 1, 2).contiguous(memory_format=self.input_memory_format)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.features(self.preprocess(frames))  # (N, 512, H/32, W/32)
        return x.permute(0, 2, 3, 1).contiguous().float()  # (N, H/32, W/32, 512)

    def load_conv_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the 32 conv tensors `features.N.{weight,bias}` (already checked)."""
        self.features.load_state_dict({k[len("features.") :]: state[k] for k in CONV_KEYS})


def pool5_to_vector(x):
    """AVE's `visual_feature_vec`: mean of pool5 [..., 7, 7, 512] over the 7 x 7 cells
    -> [..., 512]. Works on torch tensors and numpy arrays."""
    if x.shape[-1] != 512 or len(x.shape) < 3:
        raise ValueError(f"expected pool5 maps [..., H, W, 512], got {tuple(x.shape)}")
    return x.mean(axis=(-3, -2))


# --- weight files -----------------------------------------------------------------------
def _shape(shape) -> str:
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_keras_h5(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The 16 convs of a Keras VGG-19 weights file (root attribute `layer_names`, per-layer
    attribute `weight_names` = [kernel HWIO, bias]) as a `features.N.*` state dict."""
    import h5py
    import numpy as np

    path = Path(path)
    state: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f
            if "layer_names" not in root.attrs and "model_weights" in root:
                root = root["model_weights"]  # a whole-model file from model.save()
            if "layer_names" not in root.attrs:
                raise WeightsError(f"{path}: HDF5 file without a `layer_names` attribute (not a Keras weights file)")
            layers = [_text(n) for n in root.attrs["layer_names"]]
            for name, idx, (cout, cin) in zip(KERAS_CONV_LAYERS, CONV_INDICES, CONV_CHANNELS):
                if name not in layers or name not in root:
                    raise WeightsError(f"{path}: layer {name} is missing (not a VGG-19 weights file?)")
                group = root[name]
                weight_names = [_text(n) for n in group.attrs.get("weight_names", [])]
                if len(weight_names) != 2:
                    raise WeightsError(
                        f"{path}: layer {name} has {len(weight_names)} weights, expected 2 (kernel, bias)"
                    )
                for wname in weight_names:
                    if wname not in group:
                        raise WeightsError(f"{path}: layer {name} lists weight {wname} but has no such dataset")
                kernel, bias = (group[w] for w in weight_names)
                if kernel.shape != (3, 3, cin, cout):
                    raise WeightsError(
                        f"{path}: {name} kernel has shape {_shape(kernel.shape)}, expected {_shape((3, 3, cin, cout))}"
                    )
                if bias.shape != (cout,):
                    raise WeightsError(
                        f"{path}: {name} bias has shape {_shape(bias.shape)}, expected {_shape((cout,))}"
                    )
                kernel = np.asarray(kernel[()], dtype=np.float32)  # (3, 3, in, out) HWIO
                state[f"features.{idx}.weight"] = torch.from_numpy(
                    np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # (out, in, 3, 3) OIHW
                )
                state[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(bias[()], dtype=np.float32).copy())
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: unreadable Keras HDF5 weights ({_one_line(e)})") from None
    return state


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_state_dict(state, path) -> dict[str, torch.Tensor]:
    """The 32 conv tensors of a `features.N.*` VGG-19 state dict, shapes checked; other
    keys (classifier.*) are ignored."""
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    missing = [k for k in CONV_KEYS if k not in state]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise WeightsError(f"{path}: not a VGG-19 state dict, missing keys {', '.join(missing[:4])}{more}")
    out: dict[str, torch.Tensor] = {}
    for idx, (cout, cin) in zip(CONV_INDICES, CONV_CHANNELS):
        for key, want in ((f"features.{idx}.weight", (cout, cin, 3, 3)), (f"features.{idx}.bias", (cout,))):
            value = state[key]
            if not isinstance(value, torch.Tensor):
                raise WeightsError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
            if tuple(value.shape) != want:
                raise WeightsError(f"{path}: {key} has shape {_shape(value.shape)}, expected {_shape(want)}")
            out[key] = value.to(torch.float32)
    return out


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A VGG-19 state dict from a .pth file, loaded with `weights_only=True`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (refused code), RuntimeError (bad zip), EOFError
        raise WeightsError(f"{path}: refused or unreadable PyTorch file ({_one_line(e)})") from None
    return check_state_dict(state, path)


def _file_kind(path: Path) -> str:
    """'hdf5', 'torch' or 'unknown', from the file's first bytes (never its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weight file ({_one_line(e)})") from None
    if head == HDF5_SIGNATURE:
        return "hdf5"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # zip / legacy pickle
        return "torch"
    return "unknown"


def load_caffe_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The Caffe VGG-19 convs from the Keras HDF5 file or a vgg19-d01eb7cb.pth-style
    state dict; the format is read from the file's content."""
    path = Path(path)
    kind = _file_kind(path)
    if kind == "hdf5":
        return load_keras_h5(path)
    if kind == "torch":
        return load_torch_state_dict(path)
    raise WeightsError(f"{path}: neither an HDF5 (Keras) file nor a PyTorch state dict")


# --- builders -----------------------------------------------------------------------------
def _no_file(name: str, weights_file) -> None:
    if weights_file is not None:
        raise WeightsError(f"{weights_file}: the {name} visual model takes no weight file")


@VISUAL_MODELS.register("caffe")
def build_caffe(*, weights_file: str | os.PathLike | None = None, seed: int = 0) -> VGG19Pool5:
    """AVE's VGG-19 (Caffe weights, Caffe preprocessing). `seed` is unused."""
    path = resolve_weights(CAFFE.entry, weights_file)
    state = load_caffe_weights(path)
    digest = sha256_of(path)
    if digest.startswith(TORCHVISION.entry.sha256_prefix):
        raise WeightsError(
            f"{path}: this is torchvision's {TORCHVISION.entry.file_name}, not the "
            "Caffe weights; use the torchvision visual model for it"
        )
    model = VGG19Pool5(CAFFE.preprocessing, digest)
    model.load_conv_state(state)
    return model.eval().requires_grad_(False)


def _torchvision_state(weights_file) -> tuple[dict[str, torch.Tensor], Path]:
    """torchvision's state dict: the explicit file, the cached copy, or a download checked
    against the hash prefix in its file name (`resolve_weights`, as for every weight file)."""
    path = resolve_weights(TORCHVISION.entry, weights_file)
    if _file_kind(path) != "torch":
        raise WeightsError(f"{path}: not a PyTorch state dict ({TORCHVISION.entry.file_name} expected)")
    return load_torch_state_dict(path), path


@VISUAL_MODELS.register("torchvision")
def build_torchvision(*, weights_file: str | os.PathLike | None = None, seed: int = 0) -> VGG19Pool5:
    """torchvision's VGG19_Weights.IMAGENET1K_V1 with its normalisation. `seed` is unused."""
    state, path = _torchvision_state(weights_file)
    digest = sha256_of(path)
    if digest.startswith(_CAFFE_PTH_PREFIX):
        raise WeightsError(
            f"{path}: this is the Caffe-converted vgg19-{_CAFFE_PTH_PREFIX}.pth, "
            "not torchvision's weights; use the caffe visual model for it"
        )
    model = VGG19Pool5(TORCHVISION.preprocessing, digest)
    model.load_conv_state(state)
    return model.eval().requires_grad_(False)


def random_state(seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights, identical on every machine for a seed (CPU generator): Kaiming
    normal (fan_out, ReLU) as torchvision initialises VGG, zero biases."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for idx, (cout, cin) in zip(CONV_INDICES, CONV_CHANNELS):
        w = torch.empty(cout, cin, 3, 3)
        nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=g)
        state[f"features.{idx}.weight"] = w
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    return state


@VISUAL_MODELS.register("random")
def build_random(*, weights_file: str | os.PathLike | None = None, seed: int = 0) -> VGG19Pool5:
    """Seeded random VGG-19 with Caffe preprocessing (no download; for tests and dry runs)."""
    _no_file("random", weights_file)
    model = VGG19Pool5(RANDOM.preprocessing, random_weights_tag(seed))
    model.load_conv_state(random_state(seed))
    return model.eval().requires_grad_(False)
