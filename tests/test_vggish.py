"""VGGish front end, network, PCA and weight loading, pinned against the public PyTorch
port of VGGish (torchvggish 0.2: numpy front end of the TF release, VGG module,
Postprocessor) and against the facts of REFERENCE.md section 2 -- never against our own
output. No weights are downloaded: the tests write their own weight files."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

try:  # torchvggish 0.2 imports soundfile at import time (for wav reading we never use)
    import soundfile  # noqa: F401
except ImportError:  # pragma: no cover - only when soundfile is absent
    sys.modules["soundfile"] = types.ModuleType("soundfile")

from torchvggish import mel_features, vggish_input  # noqa: E402
from torchvggish.torchvggish import VGG, Postprocessor, make_layers  # noqa: E402

from avel.core.errors import WeightsError  # noqa: E402
from avel.extractors.melspec import log_mel_examples, log_mel_frames, mel_matrix  # noqa: E402
from avel.extractors.registry import AUDIO_MODELS, random_weights_tag  # noqa: E402
from avel.extractors.vggish import VGGishPCA, load_pca  # noqa: E402

SR = 16000
FRONT_END_TOL = 1e-4  # max abs error of log-mel values
NETWORK_RTOL = 1e-4  # max abs error / max abs reference embedding
# the public state-dict layout (REFERENCE.md section 2)
PUBLIC_KEYS = [
    f"{block}.{i}.{p}"
    for block, idx in (("features", (0, 3, 6, 8, 11, 13)), ("embeddings", (0, 2, 4)))
    for i in idx
    for p in ("weight", "bias")
]


# --- signals --------------------------------------------------------------------------
def white_noise(seconds: float, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(int(seconds * SR)) * amp, -1, 1).astype(np.float32)


def chirp(seconds: float, f0: float = 50.0, f1: float = 7900.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    return (0.5 * np.sin(phase)).astype(np.float32)


def long_mix(seconds: float = 7.3) -> np.ndarray:
    """Tones, noise, silence and a click: several examples plus an incomplete tail."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3150 * t)
    x += white_noise(seconds, seed=3, amp=0.05)
    x[int(0.3 * n) : int(0.45 * n)] = 0.0  # digital silence
    x[int(0.7 * n) + 100] = 0.9  # a click
    return x.astype(np.float32)


def reference_examples(x: np.ndarray) -> torch.Tensor:
    """torchvggish's front end for 16 kHz mono input: [E, 96, 64]."""
    ref = vggish_input.waveform_to_examples(x, SR)  # 0.2 returns a tensor [E, 1, 96, 64]
    ref = ref.detach() if isinstance(ref, torch.Tensor) else torch.from_numpy(np.asarray(ref))
    return ref.reshape(-1, 96, 64).float()


# --- front end ------------------------------------------------------------------------
@pytest.mark.parametrize("signal", [white_noise(3.0), chirp(2.0), long_mix()], ids=["noise", "chirp", "7.3s-mix"])
def test_log_mel_examples_match_reference(signal):
    ref = reference_examples(signal)  # [E, 96, 64]
    ours = log_mel_examples(torch.from_numpy(signal)[None])  # [1, E, 96, 64]
    assert ours.dtype == torch.float32
    assert ours.shape == (1, *ref.shape)
    assert (ours[0] - ref).abs().max().item() <= FRONT_END_TOL


def test_log_mel_frames_match_reference_including_tail():
    x = long_mix(2.345)
    ref = mel_features.log_mel_spectrogram(
        x.astype(np.float64),
        audio_sample_rate=SR,
        log_offset=0.01,
        window_length_secs=0.025,
        hop_length_secs=0.010,
        num_mel_bins=64,
        lower_edge_hertz=125,
        upper_edge_hertz=7500,
    )  # [F, 64]
    ours = log_mel_frames(torch.from_numpy(x)[None])[0]
    assert ours.shape == ref.shape == (1 + (len(x) - 400) // 160, 64)
    assert np.abs(ours.numpy() - ref).max() <= FRONT_END_TOL


def test_front_end_is_batched():
    x = np.stack([white_noise(2.0, seed=5), chirp(2.0)])  # [2, S]
    ours = log_mel_examples(torch.from_numpy(x))  # [2, E, 96, 64]
    for i in range(2):
        assert (ours[i] - reference_examples(x[i])).abs().max().item() <= FRONT_END_TOL


def test_short_input_gives_no_examples():
    assert log_mel_examples(torch.zeros(3, 15599)).shape == (3, 0, 96, 64)
    assert log_mel_examples(torch.zeros(3, 15600)).shape == (3, 1, 96, 64)
    assert log_mel_frames(torch.zeros(2, 399)).shape == (2, 0, 64)


@pytest.mark.parametrize(
    "bands, bins, sr, lo, hi",
    # the last case puts the lowest band edge on the DC bin
    [(64, 257, 16000, 125.0, 7500.0), (40, 129, 8000, 60.0, 3800.0), (32, 257, 16000, 0.0, 8000.0)],
)
def test_mel_matrix_matches_reference(bands, bins, sr, lo, hi):
    ref = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=bands,
        num_spectrogram_bins=bins,
        audio_sample_rate=sr,
        lower_edge_hertz=lo,
        upper_edge_hertz=hi,
    )
    ours = mel_matrix(num_bands=bands, num_fft_bins=bins, sample_rate_hz=sr, lower_hz=lo, upper_hz=hi)
    assert ours.shape == (bins, bands)
    assert np.abs(ours.numpy() - ref).max() <= 1e-10
    assert (ours[0] == 0).all()  # DC row
    assert ours.max().item() <= 1.0


# --- network against the port -----------------------------------------------------------
@pytest.fixture(scope="module")
def port_and_file(tmp_path_factory):
    """The port's VGG with seeded He-normal weights and random biases, saved as a state
    dict laid out like the public vggish-10086976.pth."""
    torch.manual_seed(0)
    port = VGG(make_layers(), postprocess=False).eval()
    g = torch.Generator().manual_seed(1234)
    state = {}
    for k, v in port.state_dict().items():
        if k.endswith("weight"):
            fan_in = v[0].numel()
            state[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    port.load_state_dict(state)
    assert sorted(state) == sorted(PUBLIC_KEYS)
    path = tmp_path_factory.mktemp("weights") / "vggish-test.pth"
    torch.save(port.state_dict(), path)
    return port, path


@pytest.fixture(scope="module")
def loaded(port_and_file):
    _, path = port_and_file
    return AUDIO_MODELS.get("vggish")(weights_file=path).eval()


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def test_network_matches_port(port_and_file, loaded):
    port, path = port_and_file
    signals = [white_noise(1.0, seed=11), chirp(1.0), long_mix(1.0)]
    examples = torch.cat([reference_examples(s)[:1] for s in signals])[:, None]  # [3, 1, 96, 64]
    with torch.no_grad():
        ref = port(examples)
        ours = loaded.network(examples)
    assert ours.shape == (3, 128)
    assert (ref > 0).sum() > 30  # a non-trivial comparison
    assert _rel_err(ours, ref) <= NETWORK_RTOL
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.pca_sha256 == ""


def test_extractor_end_to_end_matches_port(port_and_file, loaded):
    """[N, 16000] waveforms -> first example of each 1-s slice -> port VGG."""
    port, _ = port_and_file
    slices = np.stack([white_noise(1.0, seed=21), chirp(1.0, 200, 3000), long_mix(1.0)])  # [3, 16000]
    with torch.no_grad():
        ref = torch.cat([port(reference_examples(s)[:1][:, None]) for s in slices])
        ours = loaded(torch.from_numpy(slices))
    assert ours.shape == (3, 128) and ours.dtype == torch.float32
    assert _rel_err(ours, ref) <= NETWORK_RTOL
    with pytest.raises(ValueError):
        loaded(torch.zeros(2, 32000))  # one 1-s segment per row


# --- PCA ----------------------------------------------------------------------------------
def _port_postprocess(emb: torch.Tensor, eigen: np.ndarray, means: np.ndarray):
    """The port's Postprocessor math, without its download in __init__."""
    pp = Postprocessor.__new__(Postprocessor)
    pp._pca_matrix = torch.as_tensor(eigen).float()
    pp._pca_means = torch.as_tensor(means.reshape(-1, 1)).float()
    with torch.no_grad():
        return pp.postprocess(emb)


def _pca_params(seed: int, emb: np.ndarray):
    """A whitening-like PCA for the embeddings `emb` [N, 128]: a random orthogonal
    matrix whose rows are scaled so the projections have RMS 1..1.6 (some clip at +-2)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    means = emb.mean(0) + rng.standard_normal(128) * (emb.std(0).mean() * 0.2 + 1e-3)
    rms = np.sqrt((((emb - means) @ q.T) ** 2).mean(0)) + 1e-9  # [128]
    eigen = q * (rng.uniform(1.0, 1.6, size=128) / rms)[:, None]
    return eigen, means


def _check_quantised(ours: torch.Tensor, ref: torch.Tensor, eigen, means, emb):
    # pre-rounding values in float64 (REFERENCE: E @ (x - mean), clip, (x + 2) * 255 / 4)
    pre = (np.clip((emb.double().numpy() - means.reshape(1, -1)) @ eigen.T, -2, 2) + 2) * 255 / 4
    near_tie = np.abs(pre - np.floor(pre) - 0.5) < 1e-3  # float32 order of sums may flip these
    assert near_tie.mean() < 0.01
    diff = (ours - ref).abs().numpy()
    assert diff[~near_tie].max() == 0
    assert diff.max() <= 1
    q = ours.numpy()
    assert (q == np.round(q)).all() and q.min() == 0 and q.max() == 255
    assert ((q > 0) & (q < 255)).mean() > 0.3  # not only clipped values


def test_pca_module_matches_port():
    rng = np.random.default_rng(7)
    emb = torch.from_numpy(rng.uniform(0, 3, size=(500, 128)).astype(np.float32))
    eigen, means = _pca_params(8, emb.double().numpy())
    ref = _port_postprocess(emb, eigen, means)
    ours = VGGishPCA(torch.from_numpy(eigen), torch.from_numpy(means))(emb)
    _check_quantised(ours, ref, eigen, means, emb)


@pytest.fixture(scope="module")
def random0():
    return AUDIO_MODELS.get("random")(seed=0).eval()


def test_pca_file_through_builder_matches_port(tmp_path, random0):
    slices = torch.from_numpy(
        np.stack([white_noise(1.0, seed=30 + i, amp=0.05 * (i + 1)) for i in range(6)])
        + np.stack([chirp(1.0, 100 * (i + 1), 2000 * (i + 1)) for i in range(6)])
    )  # [6, 16000]
    with torch.no_grad():
        emb = random0(slices)  # raw embeddings [6, 128]
    eigen, means = _pca_params(9, emb.double().numpy())
    path = tmp_path / "pca-test.pth"
    torch.save({"pca_eigen_vectors": eigen, "pca_means": means}, path)  # numpy arrays inside

    with_pca = AUDIO_MODELS.get("random")(seed=0, pca_file=path).eval()
    assert with_pca.pca_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():
        ours = with_pca(slices)
    _check_quantised(ours, _port_postprocess(emb, eigen, means), eigen, means, emb)


def test_pca_file_written_by_numpy_1_loads(tmp_path):
    """The public PCA file predates numpy 2: its pickle names numpy.core.multiarray."""
    eigen, means = _pca_params(10, np.random.default_rng(10).uniform(0, 3, size=(64, 128)))
    modern = tmp_path / "modern.pth"
    torch.save(
        {"pca_eigen_vectors": eigen, "pca_means": means.reshape(-1, 1)}, modern, _use_new_zipfile_serialization=False
    )
    raw = modern.read_bytes()
    if b"numpy._core.multiarray" in raw:
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    old = tmp_path / "numpy1.pth"
    old.write_bytes(raw)
    pca = load_pca(old)
    assert np.abs(pca.eigen_vectors.numpy() - eigen).max() < 1e-6
    assert np.abs(pca.means.numpy() - means).max() < 1e-6


# --- a tone burst in second 3 -------------------------------------------------------------
def test_tone_burst_shows_in_its_segment(random0):
    x = white_noise(10.0, seed=40, amp=1e-3)
    t = np.arange(SR) / SR
    x[3 * SR : 4 * SR] += (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    examples = random0.front_end(torch.from_numpy(x).reshape(10, SR))  # [10, 1, 96, 64]
    assert examples.shape == (10, 1, 96, 64)
    # log of the total mel energy of each frame (log-sum-exp over bands), mean per segment
    energy = examples[:, 0].logsumexp(dim=-1).mean(dim=-1)  # [10]
    others = torch.cat([energy[:3], energy[4:]])
    assert energy.argmax().item() == 3
    assert energy[3] > others.max() + 3.0  # nats: > 20x the energy
    assert others.max() - others.min() < 0.5  # the rest is one noise floor
    # the loudest band of segment 3 is one of the two bands centred next to 1 kHz
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    centres = np.linspace(mel(125), mel(7500), 66)[1:-1]
    nearest = set(np.argsort(np.abs(centres - mel(1000)))[:2].tolist())
    assert examples[3, 0].mean(0).argmax().item() in nearest


# --- errors -----------------------------------------------------------------------------
def _build_vggish(**kw):
    return AUDIO_MODELS.get("vggish")(**kw)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="nowhere.pth"):
        _build_vggish(weights_file=tmp_path / "nowhere.pth")


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match="notes.pth"):
        _build_vggish(weights_file=path)
    with pytest.raises(WeightsError, match="notes.pth"):
        _build_vggish(weights_file=str(path))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.pth"):
        AUDIO_MODELS.get("random")(pca_file=empty)


def _small_state(keys):
    return {k: torch.zeros(1) for k in keys}


def test_state_dict_with_missing_key(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save(_small_state([k for k in PUBLIC_KEYS if k != "embeddings.4.weight"]), path)
    with pytest.raises(WeightsError, match=r"partial\.pth.*missing keys embeddings\.4\.weight$"):
        _build_vggish(weights_file=path)


def test_state_dict_with_unexpected_key_or_shape(tmp_path):
    path = tmp_path / "extra.pth"
    torch.save(_small_state(PUBLIC_KEYS + ["pproc.means"]), path)
    with pytest.raises(WeightsError, match=r"extra\.pth.*unexpected keys pproc\.means"):
        _build_vggish(weights_file=path)
    path = tmp_path / "shapes.pth"
    torch.save(_small_state(PUBLIC_KEYS), path)
    with pytest.raises(WeightsError, match=r"shapes\.pth.*features\.0\.weight has shape \(1,\)"):
        _build_vggish(weights_file=path)
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match=r"list\.pth.*state dict"):
        _build_vggish(weights_file=path)


def test_pca_file_with_wrong_content(tmp_path):
    path = tmp_path / "pca-bad.pth"
    torch.save({"pca_eigen_vectors": np.eye(128)}, path)
    with pytest.raises(WeightsError, match=r"pca-bad\.pth.*pca_means"):
        load_pca(path)
    torch.save({"pca_eigen_vectors": np.eye(64), "pca_means": np.zeros(128)}, path)
    with pytest.raises(WeightsError, match=r"pca-bad\.pth.*pca_eigen_vectors has shape \(64, 64\)"):
        load_pca(path)


def test_offline_with_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVEL_OFFLINE", "1")
    monkeypatch.setenv("AVEL_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=r"vggish-10086976\.pth") as e:
        _build_vggish()
    assert "--audio-weights-file" in str(e.value)
    with pytest.raises(WeightsError, match=r"vggish_pca_params-970ea276\.pth") as e:
        AUDIO_MODELS.get("random")(pca_file="download")
    assert "--audio-pca-file" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_offline_uses_the_cache(tmp_path, monkeypatch, port_and_file):
    _, path = port_and_file
    (tmp_path / "vggish-10086976.pth").symlink_to(path)
    monkeypatch.setenv("AVEL_OFFLINE", "1")
    monkeypatch.setenv("AVEL_WEIGHTS_DIR", str(tmp_path))
    model = _build_vggish()
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evals:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize("payload", [_RunsShell, _Evals])
@pytest.mark.parametrize("container", ["torch", "pickle"])
def test_malicious_pickle_is_refused_never_run(tmp_path, payload, container):
    marker = tmp_path / "pwned"
    evil = payload(f"touch {marker}")
    weights = tmp_path / "evil.pth"
    pca = tmp_path / "evil-pca.pth"
    if container == "torch":
        torch.save({"features.0.weight": evil}, weights)
        torch.save({"pca_eigen_vectors": evil, "pca_means": np.zeros(128)}, pca)
    else:
        weights.write_bytes(pickle.dumps(evil, protocol=2))
        pca.write_bytes(pickle.dumps({"pca_eigen_vectors": evil}, protocol=2))
    with pytest.raises(WeightsError, match=r"evil\.pth.*refused"):
        _build_vggish(weights_file=weights)
    with pytest.raises(WeightsError, match=r"evil-pca\.pth.*refused"):
        AUDIO_MODELS.get("random")(pca_file=pca)
    assert not marker.exists()


# --- random weights ---------------------------------------------------------------------
def test_random_weights_are_seeded(random0):
    x = torch.from_numpy(np.stack([white_noise(1.0, seed=50), chirp(1.0)]))  # [2, 16000]
    again = AUDIO_MODELS.get("random")(seed=0).eval()
    other = AUDIO_MODELS.get("random")(seed=1).eval()
    with torch.no_grad():
        a, b, c = random0(x), again(x), other(x)
    assert a.shape == (2, 128) and a.dtype == torch.float32
    assert torch.equal(a, b)
    for k, v in random0.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert not torch.equal(a, c)
    assert (a >= 0).all() and (c >= 0).all()  # final ReLU
    assert (a > 0).sum() > 10
    assert random0.weights_sha256 == random_weights_tag(0) == "random-seed-0"
    assert other.weights_sha256 == random_weights_tag(1)
    assert random0.pca_sha256 == ""


def test_front_end_stays_float32_under_autocast(random0):
    x = torch.from_numpy(np.stack([white_noise(1.0, seed=60), chirp(1.0)]))
    with torch.no_grad():
        full = random0(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mel = random0.front_end(x)
            low = random0(x)
    assert mel.dtype == torch.float32
    assert torch.equal(mel, random0.front_end(x))
    assert low.dtype == torch.float32
    assert _rel_err(low, full) < 0.1  # bf16 network, float32 front end


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(port_and_file, loaded):
    port, _ = port_and_file
    slices = np.stack([white_noise(1.0, seed=70), chirp(1.0)])
    with torch.no_grad():
        ref = torch.cat([port(reference_examples(s)[:1][:, None]) for s in slices])
        gpu = loaded.to("cuda")
        try:
            mel = log_mel_examples(torch.from_numpy(slices).cuda())
            assert mel.device.type == "cuda"
            out = gpu(torch.from_numpy(slices))  # input follows the module's device
        finally:
            loaded.to("cpu")
    assert out.device.type == "cuda"
    assert (mel[:, 0].cpu() - log_mel_examples(torch.from_numpy(slices))[:, 0]).abs().max() <= 1e-5
    # TF32 convolutions on Ampere+ GPUs: a looser bound than on the CPU
    assert _rel_err(out.cpu(), ref) <= 1e-2
