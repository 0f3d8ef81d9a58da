"""VGG-19 pool5 extractor: weight files in their real formats (Keras HDF5 as released,
Caffe-converted and torchvision state dicts), preprocessing pinned by hand, pool5 pinned
against an independent NHWC numpy implementation of the Keras model."""

from __future__ import annotations

import io
import math
import pickle
import urllib.error
import urllib.request

import h5py
import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import functional as TF

import avel.extractors.vgg19 as vgg19
from avel.core.errors import WeightsError
from avel.extractors.registry import VISUAL_MODELS
from avel.extractors.vgg19 import (
    build_caffe,
    build_random,
    build_torchvision,
    pool5_to_vector,
)

LAYERS = [f"block{b}_conv{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1)]
INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
CHANNELS = [3, 64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])


# --- writers of the public formats ---------------------------------------------------------
def keras_weights(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded HWIO kernels and biases, He-scaled so activations stay O(1..100)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, cin, cout in zip(LAYERS, CHANNELS[:-1], CHANNELS[1:]):
        k = (rng.standard_normal((3, 3, cin, cout)) * math.sqrt(2.0 / (9 * cin))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        out[name] = (k, b)
    return out


def write_keras_h5(path, weights, *, style="release", omit=(), shapes=None, group=None):
    """A Keras weights file: root attribute layer_names with the input and pool layers
    (empty weight_names) as in the real file. style 'release': datasets
    'block1_conv1_W_1:0' in the layer group, bytes attributes (the 2016 file); style
    'keras2': nested 'block1_conv1/kernel:0', str attributes. `shapes` overrides kernel
    shapes (written lazily, no data). `group`: write under that group (model.save files
    keep their weights under 'model_weights')."""
    shapes = shapes or {}
    names = ["input_1"]
    for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)):
        names += [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"]
    names = [n for n in names if n not in omit]
    with h5py.File(path, "w") as root:
        f = root.create_group(group) if group else root
        if style == "release":
            f.attrs["layer_names"] = np.array([n.encode() for n in names])
        else:
            f.attrs["layer_names"] = names
        for name in names:
            g = f.create_group(name)
            if name not in weights:
                g.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            k, b = weights[name]
            if style == "release":
                wn = [f"{name}_W_1:0", f"{name}_b_1:0"]
                g.attrs["weight_names"] = np.array([w.encode() for w in wn])
            else:
                wn = [f"{name}/kernel:0", f"{name}/bias:0"]
                g.attrs["weight_names"] = wn
            if name in shapes:
                g.create_dataset(wn[0], shape=shapes[name], dtype="f4")
            else:
                g.create_dataset(wn[0], data=k)
            g.create_dataset(wn[1], data=b)


def caffe_state_dict(weights) -> dict[str, torch.Tensor]:
    """The same weights as a vgg19-d01eb7cb.pth-style state dict, classifier.* included."""
    sd = {}
    for name, idx in zip(LAYERS, INDICES):
        k, b = weights[name]
        sd[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        sd[f"features.{idx}.bias"] = torch.from_numpy(b.copy())
    sd["classifier.0.weight"] = torch.zeros(8, 4)  # extras: ignored (shape irrelevant)
    sd["classifier.0.bias"] = torch.zeros(8)
    sd["classifier.6.bias"] = torch.zeros(1000)
    return sd


# --- an independent NHWC reference of the Keras model ----------------------------------------
def caffe_preprocess_np(frames_rgb: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] uint8 RGB -> float64 BGR minus the Caffe means, by hand."""
    return frames_rgb.astype(np.float64)[..., ::-1] - CAFFE_BGR_MEAN


def conv_same_relu(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Keras Conv2D(3x3, padding='same') + ReLU on one NHWC image [H, W, Cin], kernel HWIO."""
    h, w, cin = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    cols = np.stack([xp[i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=2)
    y = cols.reshape(h * w, 9 * cin) @ k.astype(np.float64).reshape(9 * cin, -1) + b
    return np.maximum(y, 0.0).reshape(h, w, -1)


def maxpool2(x: np.ndarray) -> np.ndarray:
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))


def keras_pool5_np(image_rgb: np.ndarray, weights) -> np.ndarray:
    x = caffe_preprocess_np(image_rgb[None])[0]
    for name in LAYERS:
        x = conv_same_relu(x, *weights[name])
        if name in ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4"):
            x = maxpool2(x)
    return x  # [H/32, W/32, 512]


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights():
    return keras_weights(seed=1234)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, weights):
    path = tmp_path_factory.mktemp("keras") / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, weights)
    return path


@pytest.fixture(scope="module")
def caffe_model(keras_file):
    return build_caffe(weights_file=keras_file)


@pytest.fixture(scope="module")
def frames64():
    return torch.from_numpy(np.random.default_rng(7).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("AVEL_OFFLINE", "1")
    monkeypatch.setenv("AVEL_WEIGHTS_DIR", str(tmp_path / "empty-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def raises_one_line(fn, *fragments):
    with pytest.raises(WeightsError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert str(frag) in msg, msg
    return msg


# --- registry --------------------------------------------------------------------------------
def test_registered_keyword_only_builders():
    for name, fn in (("caffe", build_caffe), ("torchvision", build_torchvision), ("random", build_random)):
        assert VISUAL_MODELS.get(name) is fn
    with pytest.raises(TypeError):
        build_random(None, 0)


# --- Keras HDF5 loading -----------------------------------------------------------------------
def test_keras_kernels_are_transposed_hwio_to_oihw(caffe_model, weights, keras_file):
    for name, idx in zip(LAYERS, INDICES):
        k, b = weights[name]
        conv = caffe_model.features[idx]
        assert isinstance(conv, torch.nn.Conv2d) and conv.padding == (1, 1)
        assert isinstance(caffe_model.features[idx + 1], torch.nn.ReLU)
        w = conv.weight.detach().numpy()
        np.testing.assert_array_equal(w, k.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(conv.bias.detach().numpy(), b)
    pools = [i for i, m in enumerate(caffe_model.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [4, 9, 18, 27, 36] and len(caffe_model.features) == 37
    # one element by index, independent of any transpose convention: W[o, c, y, x] = K[y, x, c, o]
    k = weights["block2_conv1"][0]
    assert caffe_model.features[5].weight[17, 33, 0, 2].item() == k[0, 2, 33, 17]
    assert caffe_model.weights_sha256 == vgg19.sha256_of(keras_file)
    assert caffe_model.preprocessing.name == "caffe"


def test_first_conv_matches_numpy_nhwc_reference(caffe_model, weights):
    img = np.random.default_rng(3).integers(0, 256, (1, 12, 10, 3), dtype=np.uint8)
    with torch.no_grad():
        y = caffe_model.features[:2](caffe_model.preprocess(torch.from_numpy(img)))  # conv + ReLU
    got = y.permute(0, 2, 3, 1).numpy()[0]
    x = caffe_preprocess_np(img)[0]
    k, b = weights["block1_conv1"]
    ref = np.zeros((12, 10, 64))
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    for yy in range(12):
        for xx in range(10):
            ref[yy, xx] = np.einsum("ijc,ijco->o", xp[yy : yy + 3, xx : xx + 3], k.astype(np.float64)) + b
    ref = np.maximum(ref, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_pool5_matches_numpy_keras_reference(caffe_model, weights, frames64):
    with torch.no_grad():
        got = caffe_model(frames64).numpy()
    assert got.shape == (2, 2, 2, 512) and got.dtype == np.float32
    for n in range(2):
        ref = keras_pool5_np(frames64[n].numpy(), weights)
        assert np.abs(ref).max() > 1.0  # a real signal reached pool5
        assert np.abs(got[n] - ref).max() <= 1e-4 * np.abs(ref).max()
        # the four cells are distinct, so a wrong HWC order would show
        assert np.abs(ref[0, 1] - ref[1, 0]).max() > 1e-2 * np.abs(ref).max()


def test_keras2_style_names_and_str_attributes(tmp_path, weights, caffe_model):
    path = tmp_path / "weights.bin"  # the name says nothing: the content decides
    write_keras_h5(path, weights, style="keras2")
    model = build_caffe(weights_file=path)
    for a, b in zip(model.state_dict().values(), caffe_model.state_dict().values()):
        assert torch.equal(a, b)


def test_caffe_state_dict_gives_identical_pool5(tmp_path, weights, caffe_model, frames64):
    path = tmp_path / "vgg19-d01eb7cb.pth"
    torch.save(caffe_state_dict(weights), path)
    legacy = tmp_path / "legacy.pth"  # the pre-1.6 serialisation of the 2017 conversions
    torch.save(caffe_state_dict(weights), legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b"\x80"
    with torch.no_grad():
        want = caffe_model(frames64)
        for p in (path, legacy):
            model = build_caffe(weights_file=p)
            assert model.weights_sha256 == vgg19.sha256_of(p)
            assert torch.equal(model(frames64), want)


def test_whole_model_keras_file(tmp_path):
    path = tmp_path / "model.h5"
    zeros = {n: (None, np.full(c, 0.5, np.float32)) for n, c in zip(LAYERS, CHANNELS[1:])}
    shapes = {n: (3, 3, ci, co) for n, ci, co in zip(LAYERS, CHANNELS[:-1], CHANNELS[1:])}
    write_keras_h5(path, zeros, style="keras2", shapes=shapes, group="model_weights")
    model = build_caffe(weights_file=path)
    assert model.features[34].weight.abs().max() == 0 and torch.all(model.features[34].bias == 0.5)


# --- preprocessing, pinned by hand -----------------------------------------------------------
def test_caffe_preprocessing_by_hand():
    model = build_random(seed=0)
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    frames[0, :, :] = (124, 117, 104)  # RGB, about the Caffe means (R 123.68, G 116.779, B 103.939)
    frames[1, :, :] = (255, 0, 10)
    x = model.preprocess(torch.from_numpy(frames))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    f32 = np.float32
    want0 = [f32(104) - f32(103.939), f32(117) - f32(116.779), f32(124) - f32(123.68)]  # B, G, R
    want1 = [f32(10) - f32(103.939), f32(0) - f32(116.779), f32(255) - f32(123.68)]
    assert x[0, :, 5, 7].tolist() == [float(v) for v in want0]
    assert x[1, :, 31, 0].tolist() == [float(v) for v in want1]
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), [0.061, 0.221, 0.32], atol=2e-5)


def test_torchvision_normalisation_matches_torchvision(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(vgg19.random_state(5), path)
    model = build_torchvision(weights_file=path)
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    frames[0, 0, 0] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    x = model.preprocess(frames)
    # the weights' own preset: convert_image_dtype (/255) then normalize, on NCHW RGB
    ref = TF.normalize(
        TF.convert_image_dtype(frames.permute(0, 3, 1, 2), torch.float),
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    assert torch.equal(x, ref)
    hand = [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), hand, rtol=1e-6)
    # pool5 equals torchvision's own VGG-19 features with the same state dict
    tv = torchvision.models.vgg19(weights=None).features.eval()
    tv.load_state_dict({k[len("features.") :]: v for k, v in vgg19.random_state(5).items()})
    with torch.no_grad():
        ref5 = tv(ref).permute(0, 2, 3, 1)
        got = model(frames)
    assert got.shape == (2, 1, 1, 512)
    torch.testing.assert_close(got, ref5, rtol=1e-5, atol=1e-5 * ref5.abs().max().item())
    assert model.preprocessing.name == "torchvision"


# --- output layout ----------------------------------------------------------------------------
def test_pool5_shape_and_hwc_order_at_224():
    model = build_random(seed=0)
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    with torch.no_grad():
        out = model(frames)
        nchw = model.features(model.preprocess(frames))
    assert out.shape == (2, 7, 7, 512) and out.dtype == torch.float32 and out.is_contiguous()
    assert nchw.shape == (2, 512, 7, 7)
    assert torch.equal(out, nchw.permute(0, 2, 3, 1))
    assert out[1, 2, 5, 300] == nchw[1, 300, 2, 5]
    assert out.abs().max() > 0


def test_pool5_to_vector():
    x = np.random.default_rng(0).standard_normal((2, 10, 7, 7, 512))
    v = pool5_to_vector(x)
    assert v.shape == (2, 10, 512)
    np.testing.assert_allclose(v[1, 3, 100], x[1, 3, :, :, 100].sum() / 49)
    t = pool5_to_vector(torch.from_numpy(x))
    np.testing.assert_allclose(t.numpy(), v)
    with pytest.raises(ValueError):
        pool5_to_vector(np.zeros((7, 512, 7)))


# --- errors -----------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    raises_one_line(lambda: build_caffe(weights_file=path), path)
    raises_one_line(lambda: build_torchvision(weights_file=path), path)


def test_text_file(tmp_path):
    path = tmp_path / "vgg19.h5"
    path.write_text("these are not weights\n")
    raises_one_line(lambda: build_caffe(weights_file=path), path, "neither an HDF5")
    raises_one_line(lambda: build_torchvision(weights_file=path), path, "not a PyTorch")


def test_hdf5_with_missing_layer(tmp_path):
    path = tmp_path / "w.h5"
    lazy = {n: (None, np.zeros(c, np.float32)) for n, c in zip(LAYERS, CHANNELS[1:])}
    shapes = {n: (3, 3, ci, co) for n, ci, co in zip(LAYERS, CHANNELS[:-1], CHANNELS[1:])}
    write_keras_h5(path, lazy, omit=("block5_conv4",), shapes=shapes)
    raises_one_line(lambda: build_caffe(weights_file=path), path, "block5_conv4")


def test_hdf5_with_wrong_kernel_shape(tmp_path):
    path = tmp_path / "w.h5"
    lazy = {n: (None, np.zeros(c, np.float32)) for n, c in zip(LAYERS, CHANNELS[1:])}
    shapes = {n: (3, 3, ci, co) for n, ci, co in zip(LAYERS, CHANNELS[:-1], CHANNELS[1:])}
    shapes["block3_conv2"] = (3, 3, 128, 256)
    write_keras_h5(path, lazy, shapes=shapes)
    raises_one_line(
        lambda: build_caffe(weights_file=path),
        path,
        "block3_conv2 kernel has shape (3,3,128,256), expected (3,3,256,256)",
    )


def test_hdf5_not_keras(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f["avadataset"] = np.zeros(3)
    raises_one_line(lambda: build_caffe(weights_file=path), path, "layer_names")


def test_state_dict_missing_keys_and_wrong_shape(tmp_path):
    sd = vgg19.random_state(0)
    del sd["features.34.weight"], sd["features.34.bias"]
    path = tmp_path / "a.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)  # a checkpoint wrapping the state dict
    raises_one_line(lambda: build_caffe(weights_file=path), path, "features.34.weight", "features.34.bias")
    sd = vgg19.random_state(0)
    sd["features.7.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(sd, path)
    raises_one_line(
        lambda: build_torchvision(weights_file=path),
        path,
        "features.7.weight has shape (128,64,3,3), expected (128,128,3,3)",
    )


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    # the payload works when unpickled unsafely (so the test below can fail)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe), protocol=2)).close()
    assert probe.exists()

    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Payload(marker)}, zipped)
    legacy = tmp_path / "evil-legacy.pth"
    legacy.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    buf = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buf, _use_new_zipfile_serialization=False)
    legacy_torch = tmp_path / "evil-legacy-torch.pth"
    legacy_torch.write_bytes(buf.getvalue())
    for path in (zipped, legacy, legacy_torch):
        raises_one_line(lambda p=path: build_caffe(weights_file=p), path)
        raises_one_line(lambda p=path: build_torchvision(weights_file=p), path)
    assert not marker.exists()


def test_wrong_public_file_for_the_model(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    torch.save(vgg19.random_state(0), path)
    monkeypatch.setattr(vgg19, "sha256_of", lambda p: "dcbb9e9d" + "0" * 56)
    raises_one_line(lambda: build_caffe(weights_file=path), "torchvision")
    monkeypatch.setattr(vgg19, "sha256_of", lambda p: "d01eb7cb" + "0" * 56)
    raises_one_line(lambda: build_torchvision(weights_file=path), "caffe")


def test_offline_without_weights_names_the_file(offline):
    raises_one_line(
        build_caffe,
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/",
        "--visual-weights-file",
        offline / "empty-weights",
        "AVEL_OFFLINE=1",
    )
    raises_one_line(
        build_torchvision,
        "vgg19-dcbb9e9d.pth",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "--visual-weights-file",
        offline / "empty-weights",
        "AVEL_OFFLINE=1",
    )


def test_offline_torchvision_defaults_to_torch_hub_dir(offline, monkeypatch):
    monkeypatch.delenv("AVEL_WEIGHTS_DIR")
    raises_one_line(build_torchvision, offline / "torch-home" / "hub" / "checkpoints", "vgg19-dcbb9e9d.pth")


def test_torchvision_download_failure_is_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv("AVEL_OFFLINE", raising=False)
    monkeypatch.setenv("AVEL_WEIGHTS_DIR", str(tmp_path))
    calls = []

    def fail(url, **kw):
        calls.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", fail)  # the one downloader: core/weights.py
    raises_one_line(build_torchvision, "download failed", "no route to host", "vgg19-dcbb9e9d.pth")
    [url] = calls
    assert url.endswith("vgg19-dcbb9e9d.pth")
    assert not list(tmp_path.iterdir())  # nothing half-downloaded is left


def test_torchvision_from_cache_dir_offline(offline):
    cache = offline / "empty-weights"
    cache.mkdir()
    torch.save(vgg19.random_state(2), cache / "vgg19-dcbb9e9d.pth")
    model = build_torchvision()
    assert model.weights_sha256 == vgg19.sha256_of(cache / "vgg19-dcbb9e9d.pth")
    assert torch.equal(model.features[0].weight, vgg19.random_state(2)["features.0.weight"])


# --- random weights ---------------------------------------------------------------------------
def test_random_weights_are_seeded():
    a, b, c = build_random(seed=0), build_random(seed=0), build_random(seed=1)
    assert a.weights_sha256 == "random-seed-0" and c.weights_sha256 == "random-seed-1"
    for (ka, va), vb, _vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), ka
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    # spec: N(0, 2 / fan_out) drawn in layer order from a CPU torch.Generator(seed)
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(64, 3, 3, 3, generator=g) * math.sqrt(2 / (64 * 9))
    torch.testing.assert_close(a.features[0].weight, w0, rtol=1e-6, atol=0)
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        assert torch.equal(a(frames), b(frames))
        assert not torch.equal(a(frames), c(frames))
    with pytest.raises(WeightsError):
        build_random(weights_file="x.h5")
