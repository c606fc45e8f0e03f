"""medfed.corruptions: the 16 endoscopy corruptions change images, grow with severity, are deterministic,
work for grey images and torch tensors; the Corrupt transform picks a deterministic fraction of the cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from monai.data import MetaTensor
from monai.transforms import Compose, Transform
from scipy.ndimage import gaussian_filter

from medfed.seeding import derive_seed, rng_for
from medfed.corruptions import (
    CORRUPTION_NAMES,
    CORRUPTIONS,
    SEVERITIES,
    Corrupt,
    corrupt,
)

#: corruptions that draw nothing from the generator
NON_RANDOM = {"brightness", "darkness", "contrast", "defocus_blur", "zoom_blur", "lens_distortion", "resolution_change"}
#: smallest mean absolute change counted as "changed": one grey level of an 8-bit image
VISIBLE = 1 / 255


def textured(size: int = 64, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Mid-grey RGB image with smooth gradients, a periodic pattern and fine texture, in [0.05, 0.95]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    base = 0.5 + 0.15 * np.sin(2 * np.pi * 3 * xx) * np.cos(2 * np.pi * 2 * yy) + 0.1 * (xx - yy)
    texture = 0.15 * gaussian_filter(rng.standard_normal((size, size)), 1.0) + 0.02 * rng.standard_normal((size, size))
    image = np.stack([base + texture, 0.9 * base + 0.05 + texture, 0.8 * base + 0.1 - texture])[:channels]
    return np.clip(image, 0.05, 0.95).astype(np.float32)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured()


def mad(clean: np.ndarray, corrupted: np.ndarray) -> float:
    return float(np.abs(corrupted.astype(np.float64) - clean).mean())


def gradient_energy(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2))


def std_loss(clean: np.ndarray, corrupted: np.ndarray) -> float:
    return float(clean.std() - corrupted.std())


def hf_loss(clean: np.ndarray, corrupted: np.ndarray) -> float:
    return gradient_energy(clean) - gradient_energy(corrupted)


def decorrelation(clean: np.ndarray, corrupted: np.ndarray) -> float:
    return 1.0 - float(np.corrcoef(clean.ravel(), corrupted.ravel())[0, 1])


#: statistic that must strictly increase from severity 1 to 5 (mean absolute difference unless listed)
STATISTICS = {
    "brightness": lambda clean, y: float(y.mean()),
    "darkness": lambda clean, y: -float(y.mean()),
    "contrast": std_loss,
    "fog": decorrelation,  # the haze hides the scene
    "glass_blur": std_loss,  # the shuffle adds fine detail back, so loss of contrast rather than of high frequencies
    "defocus_blur": hf_loss,
    "motion_blur": hf_loss,
    "zoom_blur": hf_loss,
    "resolution_change": hf_loss,
}


# ----------------------------------------------------------------- the registry
def test_registry_names_order_and_severities():
    assert CORRUPTION_NAMES == (
        "brightness", "darkness", "contrast", "fog", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "gaussian_noise", "impulse_noise", "shot_noise", "iso_noise", "lens_distortion", "resolution_change",
        "specular_reflection", "color_changes",
    )
    assert tuple(CORRUPTIONS) == CORRUPTION_NAMES
    assert SEVERITIES == (1, 2, 3, 4, 5)


# ----------------------------------------------------------------- every corruption
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_changes_the_image_and_keeps_shape_dtype_and_range(image, name, severity):
    out = corrupt(image, name, severity, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert mad(image, out) > VISIBLE
    assert np.array_equal(image, textured())  # input untouched


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_grows_with_severity(image, name):
    statistic = STATISTICS.get(name, mad)
    values = [statistic(image, corrupt(image, name, s, np.random.default_rng(0))) for s in SEVERITIES]
    assert np.all(np.diff(values) > 0), f"{name}: {np.round(values, 5)}"


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_same_seed_same_pixels(image, name):
    first = corrupt(image, name, 3, np.random.default_rng(42))
    assert np.array_equal(first, corrupt(image, name, 3, np.random.default_rng(42)))
    other = corrupt(image, name, 3, np.random.default_rng(43))
    assert np.array_equal(first, other) == (name in NON_RANDOM)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_grey_images(name):
    grey = textured(channels=1)
    for severity in (1, 5):
        out = corrupt(grey, name, severity, np.random.default_rng(2))
        assert out.shape == grey.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert mad(grey, out) > VISIBLE


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_small_images_are_visibly_changed(name):
    small = textured(size=32)
    for severity in (1, 5):
        assert mad(small, corrupt(small, name, severity, np.random.default_rng(3))) > VISIBLE


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_torch_in_torch_out(image, name):
    expected = corrupt(image, name, 2, np.random.default_rng(5))
    out = corrupt(torch.from_numpy(image), name, 2, np.random.default_rng(5))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == image.shape
    assert np.array_equal(out.numpy(), expected)
    double = corrupt(torch.from_numpy(image).double(), name, 2, np.random.default_rng(5))
    assert double.dtype == torch.float64
    np.testing.assert_allclose(double.numpy(), expected, atol=1e-7)


def test_meta_tensor_keeps_its_type_and_meta(image):
    tensor = MetaTensor(torch.from_numpy(image), meta={"filename_or_obj": "stone.png"})
    out = corrupt(tensor, "fog", 2, np.random.default_rng(0))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "stone.png"
    assert np.array_equal(out.numpy(), corrupt(image, "fog", 2, np.random.default_rng(0)))


# ----------------------------------------------------------------- hand-checkable cases
def test_contrast_is_the_exact_formula():
    x = np.full((3, 16, 16), 0.3, dtype=np.float32)
    x[:, :, 8:] = 0.7  # constant plus a step: channel means 0.5
    x[1] += 0.1
    out = corrupt(x, "contrast", 1, np.random.default_rng(0))
    mean = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_array_equal(out, ((x.astype(np.float64) - mean) * 0.4 + mean).astype(np.float32))
    np.testing.assert_allclose(out[0, 0, :2], [0.42, 0.42], atol=1e-6)
    np.testing.assert_allclose(out[0, 0, -2:], [0.58, 0.58], atol=1e-6)


def test_gaussian_noise_is_the_exact_formula(image):
    out = corrupt(image, "gaussian_noise", 1, np.random.default_rng(7))
    noise = np.random.default_rng(7).standard_normal(image.shape)
    np.testing.assert_array_equal(out, np.clip(image.astype(np.float64) + 0.08 * noise, 0, 1).astype(np.float32))


def test_brightness_and_darkness_shift_hsv_value(image):
    hsv = rgb_to_hsv(image.transpose(1, 2, 0).astype(np.float64))
    for name, sign in (("brightness", 1), ("darkness", -1)):
        shifted = hsv.copy()
        shifted[..., 2] = np.clip(shifted[..., 2] + sign * 0.3, 0, 1)
        expected = hsv_to_rgb(shifted).transpose(2, 0, 1)
        np.testing.assert_allclose(corrupt(image, name, 3, np.random.default_rng(0)), expected, atol=1e-6)
    grey = textured(channels=1)
    brighter = corrupt(grey, "brightness", 2, np.random.default_rng(0))
    np.testing.assert_allclose(brighter, np.clip(grey + 0.2, 0, 1), atol=1e-6)
    black = np.zeros((3, 4, 4), np.float32)  # no hue: becomes grey
    np.testing.assert_allclose(corrupt(black, "brightness", 5, np.random.default_rng(0)), 0.5)


def test_color_changes_shift_each_channel_by_one_draw(image):
    out = corrupt(image, "color_changes", 4, np.random.default_rng(9))
    shifts = 0.4 * (np.random.default_rng(9).random(3) - 0.5)
    np.testing.assert_allclose(out, np.clip(image + shifts[:, None, None], 0, 1), atol=1e-6)
    grey = textured(channels=1)
    delta = corrupt(grey, "color_changes", 4, np.random.default_rng(9)) - grey
    inside = (grey > 0.25) & (grey < 0.75)  # away from clipping, one intensity shift for the whole image
    np.testing.assert_allclose(delta[inside], shifts[0], atol=1e-6)


def test_impulse_noise_sets_the_expected_fraction_to_black_or_white():
    x = np.full((3, 128, 128), 0.5, np.float32)
    out = corrupt(x, "impulse_noise", 5, np.random.default_rng(0))
    changed = out != 0.5
    assert set(np.unique(out[changed])) == {0.0, 1.0}
    assert changed.mean() == pytest.approx(0.27, abs=0.01)
    assert (out == 1.0).mean() == pytest.approx(0.135, abs=0.01)


def test_shot_noise_keeps_the_mean_and_lens_distortion_is_barrel():
    flat = np.full((1, 128, 128), 0.4, np.float32)
    noisy = corrupt(flat, "shot_noise", 1, np.random.default_rng(0))  # 60 photons: no clipping
    assert noisy.mean() == pytest.approx(0.4, abs=0.002)
    assert noisy.var() == pytest.approx(0.4 / 60, rel=0.05)  # Poisson(x c) / c has variance x / c
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, 65, dtype=np.float32), (1, 65, 65))  # bilinear-exact
    out = corrupt(ramp, "lens_distortion", 5, np.random.default_rng(0))
    u = np.linspace(-1.0, 1.0, 65)  # normalised column coordinate; on the middle row r = |u|
    inside = np.abs(u) <= 0.9
    np.testing.assert_allclose(out[0, 32, inside], ((1 + u * (1 + 0.05 * u**2)) / 2)[inside], atol=1e-6)
    assert out[0, 32, 32] == pytest.approx(0.5, abs=1e-6)  # the centre stays


def test_blurs_keep_a_constant_image():
    flat = np.full((3, 48, 48), 0.6, np.float32)
    for name in ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "resolution_change"):
        np.testing.assert_allclose(corrupt(flat, name, 5, np.random.default_rng(0)), 0.6, atol=1e-5)


# ----------------------------------------------------------------- the Corrupt transform
def item(case_id: str, image: np.ndarray) -> dict:
    return {"image": image, "label": 1, "case_id": case_id}


def test_corrupt_transform_is_deterministic_per_case(image):
    transform = Corrupt("glass_blur", 4, seed=3)
    assert isinstance(transform, Transform)
    first, second = transform(item("case-a", image)), transform(item("case-a", image))
    assert first["corrupted"] == second["corrupted"] == 1
    assert np.array_equal(first["image"], second["image"])
    expected = corrupt(image, "glass_blur", 4, rng_for(3, "corruption", "glass_blur", 4, "case-a"))
    assert np.array_equal(first["image"], expected)
    other = transform(item("case-b", image))["image"]
    assert not np.array_equal(first["image"], other)
    assert Corrupt("glass_blur", 4, seed=4)(item("case-a", image))["image"].tobytes() != first["image"].tobytes()
    original = item("case-a", image)
    out = transform(original)
    assert original["image"] is image and "corrupted" not in original  # the input dict is not modified
    assert out["label"] == 1 and out["case_id"] == "case-a"


def test_corrupt_transform_picks_a_fraction_of_the_cases():
    tiny = np.full((1, 4, 4), 0.5, np.float32)
    ids = [f"case-{i:03d}" for i in range(400)]
    half = Corrupt("gaussian_noise", 2, fraction=0.5, seed=11)
    picked = [half(item(i, tiny))["corrupted"] for i in ids]
    assert 0.35 <= np.mean(picked) <= 0.65
    assert picked == [half(item(i, tiny))["corrupted"] for i in ids]  # same cases on every epoch
    assert picked == [int(derive_seed(11, "corruption-pick", "gaussian_noise", i) / 2**63 < 0.5) for i in ids]
    for case_id, flag in zip(ids[:20], picked[:20], strict=True):
        out = half(item(case_id, tiny))
        assert np.array_equal(out["image"], tiny) != bool(flag)
    assert sum(Corrupt("gaussian_noise", 2, fraction=0.0)(item(i, tiny))["corrupted"] for i in ids) == 0
    assert sum(Corrupt("gaussian_noise", 2, fraction=1.0)(item(i, tiny))["corrupted"] for i in ids) == 400
    # the pick does not depend on the severity: a higher severity corrupts the same cases
    assert picked == [Corrupt("gaussian_noise", 5, fraction=0.5, seed=11)(item(i, tiny))["corrupted"] for i in ids]


def test_corrupt_transform_in_a_monai_pipeline_with_tensors(image):
    pipeline = Compose([Corrupt("defocus_blur", 2, key="img")])
    out = pipeline({"img": torch.from_numpy(image), "case_id": "x"})
    assert isinstance(out["img"], torch.Tensor) and out["corrupted"] == 1
    assert np.array_equal(out["img"].numpy(), corrupt(image, "defocus_blur", 2, np.random.default_rng(0)))


def test_corrupt_transform_repr():
    assert repr(Corrupt("fog", 3, fraction=0.25, seed=7)) == (
        "Corrupt(name='fog', severity=3, fraction=0.25, seed=7, key='image')"
    )


# ----------------------------------------------------------------- errors
def test_unknown_corruption_names_the_known_ones(image):
    with pytest.raises(ValueError, match=r"unknown corruption 'snow'.*brightness.*color_changes"):
        corrupt(image, "snow", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        Corrupt("snow", 1)
    with pytest.raises(ValueError, match=r"unknown corruption \['fog'\]"):
        Corrupt(["fog"], 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3"])
def test_bad_severity(image, severity):
    with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
        corrupt(image, "fog", severity, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity"):
        Corrupt("fog", severity)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "half", None])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\]"):
        Corrupt("fog", 1, fraction=fraction)


@pytest.mark.parametrize("shape", [(64, 64), (2, 16, 16), (4, 16, 16), (1, 3, 16, 16), (16, 16, 3)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match=r"shape \(C, H, W\) with C = 1 or 3"):
        corrupt(np.zeros(shape, np.float32), "fog", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        corrupt(torch.zeros(shape), "fog", 1, np.random.default_rng(0))


def test_bad_dtype():
    with pytest.raises(ValueError, match="floating point.*uint8"):
        corrupt(np.zeros((3, 8, 8), np.uint8), "fog", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="floating point.*int64"):
        corrupt(torch.zeros((3, 8, 8), dtype=torch.int64), "fog", 1, np.random.default_rng(0))


def test_missing_case_id():
    with pytest.raises(KeyError, match="case_id"):
        Corrupt("fog", 1)({"image": np.zeros((3, 8, 8), np.float32)})
