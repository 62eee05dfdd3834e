"""The weight-free built-in plugins: registered like any plugin, runnable at once, and each one measurably undoes
the degradation it is for (PSNR against the clean photo, on real photos from skimage.data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data
import skimage.metrics as metrics
from PIL import Image

from plugins.builtin import adjust, deblur, dehaze, demoire, denoise, derain, highlight, lowlight
from plugins.builtin.synthetic import moire, specular
from plugins.data.degradations import degrade
from registry.discover import BUILTIN_FOLDERS
from registry.errors import CannotHelp, InstallRefused
from registry.manifest import load_manifest
from registry.runtime import PythonPlugin, load_plugin
from registry.store import Registry

REAL_PHOTOS = Path(__file__).parent / "data" / "real-photos"
CLASSIC = ("dehaze", "lowlight", "deblur", "derain", "desnow", "demoire", "highlight")
ADJUSTMENTS = ("exposure", "contrast", "saturation", "white-balance", "denoise", "resize", "rotate", "crop")
BUILTIN_IDS = [f"diffplugin/{t}-classic" for t in CLASSIC] + [f"diffplugin/{t}" for t in ADJUSTMENTS]


@pytest.fixture(scope="module")
def clean_photos() -> list[Image.Image]:
    """Three real photos, short side 192 px: big enough for the methods' windows, small enough to be quick."""
    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        image = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        factor = 192 / min(image.size)
        out.append(image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS))
    return out


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry", models_dir=tmp_path / "models")


def psnr(image: Image.Image, clean: Image.Image) -> float:
    return float(metrics.peak_signal_noise_ratio(np.asarray(clean), np.asarray(image)))


# (degrade(clean, seed), restore, minimum mean PSNR gain in dB): margins sit well below what each plugin gets
# (docs/builtin-plugins.md), so the test fails on a real regression and not on noise.
RESTORATION: dict[str, tuple[Callable[[Image.Image, int], Image.Image], Callable[..., Image.Image], float]] = {
    "dehaze": (lambda im, s: degrade(im, ["haze"], seed=s), dehaze.dehaze, 4.0),
    "lowlight": (lambda im, s: degrade(im, ["lowlight"], seed=s), lowlight.lowlight, 4.0),
    "deblur": (lambda im, s: degrade(im, ["blur"], seed=s), deblur.deblur, 0.15),
    "derain": (lambda im, s: degrade(im, ["rain"], seed=s), derain.derain, 2.0),
    "desnow": (lambda im, s: degrade(im, ["snow"], seed=s), derain.desnow, 0.5),
    "demoire": (moire, demoire.demoire, 4.0),
    "highlight": (specular, highlight.highlight, 0.3),
    "denoise": (lambda im, s: degrade(im, ["noise"], seed=s), denoise.denoise, 2.0),
}


@pytest.mark.parametrize("task", list(RESTORATION))
def test_each_restoration_improves_its_degradation(task, clean_photos) -> None:
    make, restore, margin = RESTORATION[task]
    before, after = [], []
    for seed, clean in enumerate(clean_photos):
        degraded = make(clean, seed)
        kept = degraded.copy()
        restored = restore(degraded)
        assert restored.size == clean.size and restored.mode == "RGB"
        assert np.array_equal(np.asarray(degraded), np.asarray(kept))  # the input is never modified
        before.append(psnr(degraded, clean))
        after.append(psnr(restored, clean))
    gain = np.mean(after) - np.mean(before)
    assert gain > margin, (task, np.round(before, 2), np.round(after, 2))


def _all_plugins() -> list[tuple[str, Callable[..., Image.Image]]]:
    return [("dehaze", dehaze.dehaze), ("lowlight", lowlight.lowlight), ("deblur", deblur.deblur),
            ("derain", derain.derain), ("desnow", derain.desnow), ("demoire", demoire.demoire),
            ("highlight", highlight.highlight), ("denoise", denoise.denoise), ("exposure", adjust.exposure),
            ("contrast", adjust.contrast), ("saturation", adjust.saturation),
            ("white-balance", adjust.white_balance)]


#: The plugins that may refuse a photo, and what their reason says.
REFUSALS = {"derain": "of the photo", "desnow": "of the photo", "lowlight": "already bright enough"}


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16", "CMYK", "LA", "1"])
@pytest.mark.parametrize("size", [(8, 8), (1, 5), (37, 23)])
def test_every_plugin_takes_any_mode_and_tiny_sizes(mode, size) -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    before = source.tobytes()
    for name, function in _all_plugins():
        try:
            out = function(source)
        except CannotHelp as why:  # pure noise may look like nothing but rain: a plain refusal, never a crash
            assert REFUSALS.get(name, "no refusal expected") in str(why), name
            continue
        assert out.mode == "RGB" and out.size == source.size, name
    assert source.tobytes() == before and source.mode == mode


def test_derain_leaves_what_it_cannot_fill_as_it_was() -> None:
    """Bright streaks so dense that filling them would paint over the scene: the plugin refuses, and says why (on
    InstructIR's heavy-rain car the whole top-hat covered 98% of the photo and the fill painted blobs over it; only
    the streaks that fall the rain's way are filled now, and the judge decides). Light rain is still removed."""
    bands = np.full((256, 256, 3), 40, np.uint8)
    for x in range(0, 256, 7):
        bands[:, x:x + 6] = 230
    with pytest.raises(CannotHelp, match=r"covers 9\d% of the photo"):
        derain.derain(Image.fromarray(bands))
    light = Image.open(REAL_PHOTOS / "instructir_bear.png").convert("RGB")
    assert np.abs(np.asarray(derain.derain(light), float) - np.asarray(light, float)).mean() > 2


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee", "rocket"])
def test_derain_leaves_bright_texture_that_points_every_way(name: str) -> None:
    """Fur, hair, lattices and highlights pass the top-hat as rain does; only the pieces that share one direction
    are taken for streaks, so a photo without rain is barely touched (the whole top-hat changed 18-33% of these
    photos' pixels by more than 8 levels; what falls one way 5-13%)."""
    photo = Image.fromarray(getattr(skimage_data, name)())
    change = np.abs(np.asarray(derain.derain(photo), float) - np.asarray(photo, float)).max(axis=2)
    assert (change > 8).mean() < 0.15


def test_a_large_photo_keeps_its_size() -> None:
    """1024x768 through every restoration plugin (their speed is in benchmarks/builtin_plugins.py, not here)."""
    # Dimmed, so that lowlight has something to do.
    photo = Image.fromarray(skimage_data.astronaut() // 3).convert("RGB").resize((1024, 768))
    for name, function in _all_plugins():
        result = function(photo)
        assert result.size == photo.size and result.mode == "RGB", name


# ------------------------------------------------------------------------------------------ adjustments
def _mean_luma(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L"), dtype=np.float32).mean())


def test_adjustments_do_what_they_say(clean_photos) -> None:
    photo = clean_photos[1]
    assert _mean_luma(adjust.exposure(photo, ev=1.0)) > _mean_luma(photo) + 15
    assert _mean_luma(adjust.exposure(photo, ev=-1.0)) < _mean_luma(photo) - 15
    assert np.array_equal(np.asarray(adjust.exposure(photo, ev=0.0)), np.asarray(photo))
    spread = np.asarray(photo.convert("L"), dtype=np.float32).std()
    assert np.asarray(adjust.contrast(photo, amount=1.5).convert("L"), dtype=np.float32).std() > spread * 1.3
    assert np.asarray(adjust.contrast(photo, amount=0.5).convert("L"), dtype=np.float32).std() < spread * 0.7

    def chroma(image: Image.Image) -> float:
        hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
        return float(hsv[:, :, 1].mean())

    assert chroma(adjust.saturation(photo, amount=1.5)) > chroma(photo) * 1.2
    grey = np.asarray(adjust.saturation(photo, amount=0.0), dtype=np.int16)
    assert np.abs(grey[:, :, 0] - grey[:, :, 1]).max() <= 1

    # A blue cast is taken out: channel means end up close together.
    cast = Image.fromarray((np.asarray(photo, dtype=np.float32) * [0.7, 0.85, 1.0]).astype(np.uint8))
    # Gray world evens out the channel means; white patch evens out the brightest pixels instead.
    for method, statistic in (("gray-world", lambda a: a.mean(0)), ("white-patch", lambda a: np.percentile(a, 99, 0))):
        fixed = statistic(np.asarray(adjust.white_balance(cast, method=method), dtype=np.float32).reshape(-1, 3))
        assert np.ptp(fixed) < np.ptp(statistic(np.asarray(cast, dtype=np.float32).reshape(-1, 3))) / 2, method


def test_geometry_adjustments() -> None:
    photo = Image.new("RGB", (40, 20), "red")
    photo.putpixel((0, 0), (0, 0, 255))
    assert adjust.resize(photo, width=20).size == (20, 10)
    assert adjust.resize(photo, height=40).size == (80, 40)
    assert adjust.resize(photo, scale=0.5).size == (20, 10)
    assert adjust.resize(photo, width=7, height=9).size == (7, 9)
    assert adjust.resize(photo).size == (20, 10)  # no option: half the size
    turned = adjust.rotate(photo, angle=90)
    assert turned.size == (20, 40) and turned.getpixel((0, 39)) == (0, 0, 255)  # counter-clockwise, lossless
    assert adjust.rotate(photo, angle=-90).getpixel((19, 0)) == (0, 0, 255)
    assert adjust.rotate(photo, angle=30).size[1] > 20 and adjust.rotate(photo, 30, expand=False).size == (40, 20)
    assert adjust.crop(photo, aspect="1:1").size == (20, 20)
    assert adjust.crop(photo, left=0.25, right=0.25).size == (20, 20)
    assert adjust.crop(photo, top=5, bottom=5, unit="px").size == (40, 10)
    assert adjust.crop(photo, aspect="16:9").size == (36, 20)


@pytest.mark.parametrize(("function", "options", "named"), [
    (adjust.exposure, {"ev": "bright"}, "ev"),
    (adjust.exposure, {"ev": float("nan")}, "ev"),
    (adjust.contrast, {"amount": -1}, "amount"),
    (adjust.saturation, {"amount": True}, "amount"),
    (adjust.white_balance, {"method": "auto"}, "method"),
    (adjust.resize, {"scale": 0}, "width"),
    (adjust.resize, {"scale": 0.5, "width": 10}, "scale"),
    (adjust.rotate, {"angle": 720}, "angle"),
    (adjust.rotate, {"expand": "yes"}, "expand"),
    (adjust.crop, {"left": 0.6, "right": 0.6}, "left"),
    (adjust.crop, {"aspect": "wide"}, "aspect"),
    (adjust.crop, {"unit": "cm"}, "unit"),
    (dehaze.dehaze, {"t0": 0}, "t0"),
    (dehaze.dehaze, {"tolerance": -0.1}, "tolerance"),
    (lowlight.lowlight, {"gamma": 2}, "gamma"),
    (deblur.deblur, {"iterations": 0}, "iterations"),
    (derain.derain, {"threshold": -0.1}, "threshold"),
    (derain.desnow, {"flake_size": "big"}, "flake_size"),
    (demoire.demoire, {"threshold": 0}, "threshold"),
    (highlight.highlight, {"min_level": 1.5}, "min_level"),
    (denoise.denoise, {"strength": 3}, "strength"),
])
def test_bad_options_raise_a_value_error_naming_the_option(function, options, named) -> None:
    with pytest.raises(ValueError, match=f"'{named}'"):
        function(Image.new("RGB", (16, 16)), **options)


def test_a_non_image_is_refused() -> None:
    with pytest.raises(TypeError, match="PIL image"):
        adjust.exposure(np.zeros((4, 4, 3)))


# ------------------------------------------------------------------------------------------ registration
def test_manifests_are_valid_and_findable() -> None:
    manifests = [load_manifest(p) for p in sorted(BUILTIN_FOLDERS[1].glob("*.yaml"))]
    assert sorted(m.id for m in manifests) == sorted(BUILTIN_IDS)
    for manifest in manifests:
        assert manifest.kind == "python" and manifest.namespace == "diffplugin" and not manifest.weights
        assert manifest.python.entry_point.startswith("plugins.builtin.")
        assert len(manifest.examples) >= 8 and len(set(manifest.examples)) == len(manifest.examples)
        assert manifest.gpu_memory_mb == 0 and not manifest.non_commercial
    official = {m.id.removeprefix("diffplugin/") for m in (load_manifest(p) for p in BUILTIN_FOLDERS[0].glob("*.yaml"))}
    classic_tasks = {m.tasks[0] for m in manifests if m.id.endswith("-classic")}
    assert classic_tasks == set(CLASSIC) and classic_tasks <= official  # the official task names, not new ones


def test_builtins_are_listed_trusted_and_runnable_without_downloads(registry) -> None:
    statuses = {s.id: s for s in registry.plugins()}
    for plugin_id in BUILTIN_IDS:
        status = statuses[plugin_id]
        assert status.active.source == "builtin" and status.active.builtin, plugin_id
        assert status.trusted and status.runnable and status.problems == [], plugin_id
        assert status.active.distribution == "diffplugin-assistant"
    assert not registry.discovery_errors()
    assert not (registry.models_dir / "plugins").exists()  # nothing was fetched


@pytest.mark.parametrize("plugin_id", BUILTIN_IDS)
def test_load_plugin_runs_each_builtin(registry, plugin_id) -> None:
    plugin = load_plugin(registry, plugin_id)
    assert isinstance(plugin, PythonPlugin)
    photo = Image.new("RGBA", (48, 32), (30, 40, 70, 255))  # dark, so that lowlight has work to do
    out = plugin(photo)
    assert out.mode == "RGB" and min(out.size) >= 1
    if plugin_id not in ("diffplugin/resize", "diffplugin/rotate", "diffplugin/crop"):
        assert out.size == photo.size


def test_dehaze_tolerance_spares_white_areas_the_dark_channel_takes_for_haze() -> None:
    """A white wall under even haze: the dark channel prior greys it (it reads as dense haze); the tolerance keeps it
    white and the photo closer to the clean one. 0 (the default) is the plain prior."""
    rng = np.random.default_rng(0)
    clean = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((256, 256)), dtype=np.float32) / 255
    clean[40:200, 20:140] = 0.96 + 0.02 * rng.standard_normal((160, 120, 1)).clip(-1, 1)
    hazy = Image.fromarray(np.round((clean * 0.7 + 0.95 * 0.3) * 255).astype(np.uint8))
    truth = np.round(clean * 255).astype(np.uint8)
    plain, spared = np.asarray(dehaze.dehaze(hazy)), np.asarray(dehaze.dehaze(hazy, tolerance=0.4))
    assert np.array_equal(plain, np.asarray(dehaze.dehaze(hazy, tolerance=0.0)))
    assert plain[40:200, 20:140].mean() < 0.9 * 255 < spared[40:200, 20:140].mean()
    assert metrics.peak_signal_noise_ratio(truth, spared) > metrics.peak_signal_noise_ratio(truth, plain) + 5


def test_lowlight_brightens_as_far_as_a_natural_exposure_and_leaves_bright_photos_alone(clean_photos) -> None:
    """LIME's fixed gamma made a dusk photo as bright as noon (the README's rocket went from 17.2 to 12.1 dB)."""
    photo = clean_photos[0]
    dark = Image.fromarray((np.asarray(photo, np.float32) * 0.25).astype(np.uint8))
    brighter = _mean_luma(lowlight.lowlight(dark))
    assert _mean_luma(dark) + 20 < brighter <= 0.4 * 255 + 3
    assert _mean_luma(lowlight.lowlight(dark, brightness=1.0)) > brighter + 10  # the bound is what held it back
    with pytest.raises(CannotHelp, match="already bright enough"):
        lowlight.lowlight(photo, brightness=_mean_luma(photo) / 255 - 0.05)


def test_options_from_a_plan_override_the_manifest(registry) -> None:
    plugin = load_plugin(registry, "diffplugin/exposure")
    photo = Image.new("RGB", (8, 8), (60, 60, 60))
    assert _mean_luma(plugin(photo)) > 60 > _mean_luma(plugin(photo, ev=-1.0))
    with pytest.raises(ValueError, match="'ev'"):
        plugin(photo, ev="lots")


def test_a_builtin_manifest_cannot_point_at_code_outside_the_project(registry, monkeypatch) -> None:
    import dataclasses

    from registry import runtime

    record = registry.get("diffplugin/exposure").active
    spec = record.manifest.python.model_copy(update={"entry_point": "os:system"})
    bad = dataclasses.replace(record, manifest=record.manifest.model_copy(update={"python": spec}))
    with pytest.raises(InstallRefused, match=r"must live in plugins\.builtin"):
        runtime._import_entry_point(bad)
