"""The synthetic ureteroscopy federation: layout, counts, stones, read-back, cameras, distinct classes, determinism."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medfed.seeding import rng_for
from medfed.sites import load_federation
from medfed.sites.ureteroscopy import DEFAULT_CLASSES, DEFAULT_VIEWS
from medfed.synth.ureteroscopy import (
    CLASSES,
    FRAMES_PER_STONE,
    SITES,
    VIEWS,
    acquire,
    draw_stone,
    render_stone,
    site_cases,
    stone_sizes,
    write_ureteroscopy,
)

SPECS = {spec.name: spec for spec in SITES}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stones") / "small"
    write_ureteroscopy(out, scale="small", seed=0)
    return out


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def pixels(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)).tobytes()
            for p in sorted(root.rglob("*")) if p.suffix in (".png", ".jpg")}


def test_names_match_the_adapter_defaults():
    assert CLASSES == DEFAULT_CLASSES and VIEWS == DEFAULT_VIEWS


def test_config_loads_with_zero_problems_and_expected_counts(small):
    config = small / "sites" / "ureteroscopy.yaml"
    federation = load_federation(config)  # strict: raises on any indexing problem
    assert federation.site_names == ["dataset-a", "dataset-b"]
    assert federation.validate() == []
    assert [s.cases["group"].nunique() for s in federation] == [len({f.stone for f in site_cases(spec, "small")})
                                                                for spec in SITES]
    for site in federation:
        spec = SPECS[site.name]
        counts = site.cases.groupby(["stone_type", "view"]).size().to_dict()
        assert counts == {(c, v): spec.count("small", c) for c in CLASSES for v in VIEWS}
        assert len(site) == len(site_cases(spec, "small"))
        assert set(site.cases["source"]) == {spec.source_name}
        assert set(site.cases["split"]) == {"train", "val", "test"}
    assert [len(s) for s in federation] == [34, 32]
    sources = yaml.safe_load(config.read_text())["sources"]
    assert [s["layout"] for s in sources] == ["class_view_folders", "flat_csv"]
    assert all(not Path(s["root"]).is_absolute() for s in sources)
    assert {s["image_size"] for s in sources} == {32}
    assert sources[0]["group_level"] == 2 and "group_column" not in sources[0]
    assert sources[1]["group_column"] == "stone" and "group_level" not in sources[1]


def test_layouts_formats_and_shapes(small):
    a, b = small / "ureteroscopy" / "dataset-a", small / "ureteroscopy" / "dataset-b"
    assert sorted(p.name for p in a.iterdir()) == sorted(CLASSES)
    assert all(sorted(p.name for p in (a / c).iterdir()) == sorted(VIEWS) for c in CLASSES)
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    pattern = rf"({'|'.join(CLASSES)})/({'|'.join(VIEWS)})/stone_\d{{3}}/img_\d{{3}}\.png"
    assert len(files) == 34 and all(re.fullmatch(pattern, f) for f in files)
    image = Image.open(min((a / "Ia_COM" / "surface").rglob("*.png")))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))
    table = pd.read_csv(b / "labels.csv")
    assert list(table.columns) == ["file", "stone_type", "view", "stone"]
    assert table["stone"].str.fullmatch(r"b-stone-\d{3}").all()
    assert table["file"].is_monotonic_increasing and table["file"].str.match(r"frames/frame_\d{5}\.jpg$").all()
    assert sorted(str(p.relative_to(b)) for p in (b / "frames").iterdir()) == table["file"].tolist()
    # flat file names do not encode the class: the first rows are not all one class
    assert table["stone_type"].head(8).nunique() > 2
    frame = Image.open(b / table["file"].iloc[0])
    assert (frame.format, frame.mode, frame.size) == ("JPEG", "RGB", (64, 48))


def test_class_balance_differs_between_sources():
    a = np.array([SITES[0].count("demo", c) for c in CLASSES], float)
    b = np.array([SITES[1].count("demo", c) for c in CLASSES], float)
    assert np.abs(a / a.sum() - b / b.sum()).sum() > 0.15
    assert b.argmax() == CLASSES.index("Ia_COM")  # COM is the most frequent stone in clinical series


@pytest.mark.parametrize("scale", ["small", "demo", "full"])
def test_scales_stay_in_budget(scale):
    limits = {"small": (25, 45), "demo": (140, 170), "full": (300, 1000)}[scale]
    for spec in SITES:
        assert limits[0] <= len(site_cases(spec, scale)) <= limits[1]
    assert max(max(spec.shapes[scale]) for spec in SITES) == {"small": 64, "demo": 128, "full": 384}[scale]


def test_cameras_differ(small):
    """Dataset B: circular field of view (black corners), warmer white balance; dataset A: full frame."""
    frames = {}
    for name in ("dataset-a", "dataset-b"):
        paths = sorted(p for p in (small / "ureteroscopy" / name).rglob("*") if p.suffix in (".png", ".jpg"))
        frames[name] = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in paths[:12]])
    a, b = frames["dataset-a"], frames["dataset-b"]
    assert b[:, :4, :4].mean() < 8 and a[:, :4, :4].mean() > 40
    assert b[..., 0].mean() / b[..., 2].mean() > 1.15 * a[..., 0].mean() / a[..., 2].mean()


def stone(seed: int, cls: str, view: str) -> np.ndarray:
    """One dataset-A image at 64 px from its own RNG stream."""
    rng = rng_for(seed, "test", cls, view)
    return acquire(rng, render_stone(rng, (64, 64), cls, view), SITES[0])


def features(image: np.ndarray) -> np.ndarray:
    """Mean RGB, luminance spread and mean gradient of the central third (where the stone is)."""
    x = image.astype(np.float32) / 255
    h, w = x.shape[:2]
    centre = x[h // 2 - h // 6: h // 2 + h // 6, w // 2 - h // 6: w // 2 + h // 6]
    lum = centre.mean(2)
    gradient = np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean()
    return np.r_[centre.reshape(-1, 3).mean(0), lum.std(), gradient]


def test_stone_types_and_views_are_visually_distinct():
    """A nearest-centroid classifier on five simple features tells types and views apart on unseen images."""
    def sample(seeds: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = [(s, ci, vi) for s in seeds for ci in range(len(CLASSES)) for vi in range(len(VIEWS))]
        x = np.stack([features(stone(s, CLASSES[ci], VIEWS[vi])) for s, ci, vi in keys])
        return x, np.array([k[1] for k in keys]), np.array([k[2] for k in keys])

    x_train, y_train, v_train = sample(range(8))
    x_test, y_test, v_test = sample(range(100, 108))
    mu, sd = x_train.mean(0), x_train.std(0)

    def accuracy(labels_train: np.ndarray, labels_test: np.ndarray) -> float:
        z_train, z_test = (x_train - mu) / sd, (x_test - mu) / sd
        centroids = np.stack([z_train[labels_train == k].mean(0) for k in np.unique(labels_train)])
        distances = ((z_test[:, None] - centroids[None]) ** 2).sum(-1)
        return float((distances.argmin(1) == labels_test).mean())

    assert accuracy(y_train, y_test) > 0.6  # chance: 1/6
    assert accuracy(v_train, v_test) > 0.7  # chance: 1/2
    brightness = {c: np.mean([features(stone(s, c, "surface"))[:3].mean() for s in range(4)]) for c in CLASSES}
    assert min(brightness, key=brightness.get) == "Ia_COM"  # whewellite is the dark brown one
    warmth = {c: np.mean([np.subtract(*features(stone(s, c, "surface"))[[0, 2]]) for s in range(4)]) for c in CLASSES}
    assert max(warmth, key=warmth.get) == "IIIa_UricAcid"  # orange-amber
    assert min(warmth, key=warmth.get) == "IVd_Brushite"  # whitish


def test_render_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown stone type"):
        render_stone(rng_for(0), (32, 32), "Ib_Other", "surface")
    with pytest.raises(ValueError, match="unknown view"):
        render_stone(rng_for(0), (32, 32), "Ia_COM", "oblique")
    with pytest.raises(ValueError, match="unknown scale"):
        write_ureteroscopy(Path("/nonexistent"), scale="huge")


def test_same_seed_same_bytes_other_seed_other_pixels(small, tmp_path):
    again = write_ureteroscopy(tmp_path / "again", scale="small", seed=0)
    assert digests(tmp_path / "again") == digests(small)
    assert again.read_bytes() == (small / "sites" / "ureteroscopy.yaml").read_bytes()
    write_ureteroscopy(tmp_path / "other", scale="small", seed=1)
    first, second = pixels(small / "ureteroscopy"), pixels(tmp_path / "other" / "ureteroscopy")
    assert len(first) == len(second)  # dataset-a paths name the stones, which another seed deals differently
    assert not set(first.values()) & set(second.values())


def test_rewrite_replaces_previous_output(tmp_path):
    out = tmp_path / "o"
    write_ureteroscopy(out, scale="small", seed=0)
    stale = out / "ureteroscopy" / "dataset-a" / "Ia_COM" / "surface" / "stone_999" / "stale.png"
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    write_ureteroscopy(out, scale="small", seed=0)
    assert not stale.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


# ---------------------------------------------------------------------------- stones
def stones_on_disk(small: Path) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """site -> stone -> [(type, view)] of its frames, read from the files (folders of A, ``stone`` column of B)."""
    a, b = small / "ureteroscopy" / "dataset-a", small / "ureteroscopy" / "dataset-b"
    out: dict[str, dict[str, list[tuple[str, str]]]] = {"dataset-a": {}, "dataset-b": {}}
    for path in sorted(a.rglob("*.png")):
        cls, view, stone, _ = path.relative_to(a).parts
        out["dataset-a"].setdefault(stone, []).append((cls, view))
    for row in pd.read_csv(b / "labels.csv").itertuples():
        out["dataset-b"].setdefault(row.stone, []).append((row.stone_type, row.view))
    return out


def test_frames_of_a_stone_share_its_type_and_a_stone_has_two_to_five(small):
    low, high = FRAMES_PER_STONE
    for site, stones in stones_on_disk(small).items():
        assert len(stones) < sum(map(len, stones.values()))
        for frames in stones.values():
            assert low <= len(frames) <= high
            assert len({cls for cls, _ in frames}) == 1
        assert any(len({view for _, view in frames}) == 2 for frames in stones.values()), site
        spec = SPECS[site]
        expected = site_cases(spec, "small")
        assert sorted((cls, view) for frames in stones.values() for cls, view in frames) == sorted(
            (f.stone_type, f.view) for f in expected)
    # a dataset-a stone seen in both views keeps its folder name under both view folders of its class
    a = small / "ureteroscopy" / "dataset-a"
    for cls in CLASSES:
        surface = {p.name for p in (a / cls / "surface").iterdir()}
        section = {p.name for p in (a / cls / "section").iterdir()}
        others = {p.name for c in CLASSES if c != cls for v in VIEWS for p in (a / c / v).iterdir()}
        assert not (surface | section) & others


def test_adapter_keeps_each_stone_in_one_split(small):
    for site in load_federation(small / "sites" / "ureteroscopy.yaml"):
        per_group = site.cases.groupby("group")
        assert (per_group["split"].nunique() == 1).all() and (per_group["stone_type"].nunique() == 1).all()


def test_stone_sizes_and_frames_at_every_scale():
    """Cheap (no pixels): frames per (class, view) as `SiteSpec.count`, 2-5 frames per stone, one type per stone."""
    for total in range(2, 40):
        sizes = stone_sizes(rng_for(total, "sizes"), total)
        assert sum(sizes) == total and all(2 <= k <= 5 for k in sizes)
    for scale in ("small", "demo", "full"):
        for spec in SITES:
            frames = site_cases(spec, scale, seed=3)
            counts = pd.Series([(f.stone_type, f.view) for f in frames]).value_counts().to_dict()
            assert counts == {(c, v): spec.count(scale, c) for c in CLASSES for v in VIEWS}
            stones: dict[int, list] = {}
            for f in frames:
                stones.setdefault(f.stone, []).append(f)
            assert sorted(stones) == list(range(len(stones)))
            for members in stones.values():
                assert len({f.stone_type for f in members}) == 1
                assert [f.frame for f in members] == list(range(len(members)))
                views = [VIEWS.index(f.view) for f in members]
                assert views == sorted(views)  # surface frames first, then the section


def test_frames_of_one_stone_look_alike():
    """Same stone, other pose, wall, light and noise: closer in colour and texture than two stones of one type."""
    def frame(cls: str, stone: int, shot: int) -> np.ndarray:
        body = draw_stone(rng_for(0, "stone", cls, stone), cls)
        rng = rng_for(0, "shot", cls, stone, shot)
        return features(acquire(rng, render_stone(rng, (64, 64), cls, "surface", stone=body), SITES[0]))

    same, other = [], []
    for cls in CLASSES:
        for stone in range(4):
            same.append(np.abs(frame(cls, stone, 0) - frame(cls, stone, 1)))
            other.append(np.abs(frame(cls, stone, 0) - frame(cls, stone + 4, 0)))
    assert np.mean(same) < np.mean(other)
    with pytest.raises(ValueError, match="not 'Ia_COM'"):
        render_stone(rng_for(0), (32, 32), "Ia_COM", "surface", stone=draw_stone(rng_for(0), "IIa_COD", 32))


def test_demo_sites_are_large_enough_for_a_tested_comparison():
    """Cheap (no pixels): every demo site holds at least 144 frames (about 36 test cases at a test fraction of
    0.25; the grouped split moves a few) and at least 30 normal (``Ia_COM``) frames."""
    for spec in SITES:
        frames = site_cases(spec, "demo")
        assert len(frames) >= 144, spec.name
        assert sum(f.stone_type == "Ia_COM" for f in frames) >= 30, spec.name
