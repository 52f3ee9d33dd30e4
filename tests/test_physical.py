"""Physically based synthetic scenes: determinism, tile independence, KM optics, data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tilex.synthetic.physical import km, make_scene, render_scene
from tilex.synthetic.physical.render import Spectra, render_region
from tilex.synthetic.physical.spectra import DATA_FILES, check_data_files, pigment_library

SIZE = (96, 128)
BANDS = [(450.0, 30.0), (550.0, 30.0), (650.0, 30.0), (850.0, 40.0), (1000.0, 40.0)]


def _planes(scene):
    return render_region(scene, Spectra.of(scene), 0, scene.height, 0, scene.width)


def test_same_seed_same_bytes_other_seed_other_pixels():
    a, b, c = (render_scene(SIZE, seed=s, bands=BANDS) for s in (7, 7, 8))
    for name in ("visible", "bands", "hidden"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.visible, c.visible)
    assert not np.array_equal(a.hidden, c.hidden)


@pytest.mark.parametrize(
    "region", [(0, 40, 0, 50), (37, 38, 5, 128), (50, 96, 90, 128), (0, 96, 127, 128)]
)
@pytest.mark.parametrize("holdout", [False, True])
def test_a_region_alone_equals_the_whole_scene(region, holdout):
    whole = render_scene(SIZE, seed=11, recipe="mixed", bands=BANDS, holdout=holdout)
    part = render_scene(SIZE, seed=11, recipe="mixed", bands=BANDS, holdout=holdout, region=region)
    y0, y1, x0, x1 = region
    np.testing.assert_array_equal(part.visible, whole.visible[y0:y1, x0:x1])
    np.testing.assert_array_equal(part.bands, whole.bands[:, y0:y1, x0:x1])
    np.testing.assert_array_equal(part.hidden, whole.hidden[y0:y1, x0:x1])


def test_recipes_masks_and_shapes():
    nothing = render_scene(SIZE, seed=3, recipe="nothing")
    assert not nothing.hidden.any()
    for recipe in ("underdrawing", "composition", "mixed"):
        sc = render_scene(SIZE, seed=3, recipe=recipe, bands=4)
        assert sc.hidden.any() and sc.hidden.mean() < 0.6
        assert sc.bands.shape == (4, *SIZE) and sc.visible.shape == (*SIZE, 3)
        assert sc.bands.dtype == sc.visible.dtype == np.float32
        assert 0.0 <= sc.bands.min() and sc.bands.max() <= 1.0
    with pytest.raises(ValueError, match="recipe 'x'"):
        render_scene(SIZE, recipe="x")


def test_holdout_uses_other_pigments():
    names = set()
    held = set()
    for seed in range(6):
        for holdout, into in ((False, names), (True, held)):
            p = make_scene(SIZE, seed, "mixed", None, holdout)
            into.update(r.pigment.name for r in p.top + p.composition)
            into.add(p.drawing_pigment.name)
    assert names and held and not names & held


def _no_noise(scene):
    ideal = dict(read_noise=0.0, full_well=0.0, offset=0.0, shift=(0.0, 0.0), blur=0.0)
    cams = [dataclasses.replace(c, **ideal) for c in scene.cameras]
    vis = dataclasses.replace(scene.visible_camera, read_noise=0.0, full_well=0.0)
    return dataclasses.replace(
        scene, cameras=tuple(cams), visible_camera=vis, glint_strength=0.0, crack_depth=0.0
    )


def test_thick_top_paint_hides_everything_thin_shows_more_in_the_infrared():
    base = _no_noise(make_scene(SIZE, 5, "underdrawing", BANDS, False))
    empty = dataclasses.replace(base, drawing=())
    thick = _planes(dataclasses.replace(base, top_tau=1e4))
    thick_empty = _planes(dataclasses.replace(empty, top_tau=1e4))
    assert thick.mask.any()
    # not a trace left beyond float32 rounding (a code or two of 65535)
    assert np.abs(thick.bands.astype(np.int64) - thick_empty.bands).max() <= 2
    assert np.abs(thick.visible.astype(np.int64) - thick_empty.visible).max() <= 1

    thin = _planes(dataclasses.replace(base, top_tau=3.0))
    thin_empty = _planes(dataclasses.replace(empty, top_tau=3.0))
    m = thin.mask.astype(bool)
    # relative contrast of the hidden strokes, free of each camera's gain
    rel = np.abs(thin.bands.astype(np.float64) - thin_empty.bands) / thin_empty.bands
    contrast = [float(r[m].mean()) for r in rel]
    assert max(contrast[:3]) < min(contrast[3:])  # infrared sees more than the visible
    assert contrast[-1] > 3 * contrast[0] and contrast[-1] > 0.05


def test_km_layer_limits():
    a, b = km.ab(km.ks_from_reflectance(np.float32(0.4)))
    rg = np.float32([0.05, 0.9])
    assert np.allclose(km.layer(a, b, np.float32(0.0), rg), rg, atol=1e-6)
    assert np.allclose(km.layer(a, b, np.float32(60.0), rg), 0.4, atol=1e-5)
    thin = km.layer(a, b, np.float32(0.5), rg)
    assert rg[0] < thin[0] < 0.4 < thin[1] < rg[1]


def test_a_white_is_near_white_in_the_visible():
    scene = _no_noise(make_scene(SIZE, 2, "nothing", BANDS, False))
    white = dataclasses.replace(scene.top[0], white=1.0, shape=None)
    scene = dataclasses.replace(
        scene,
        top=(white,),
        varnish=0.0,
        weave_relief=0.0,
        visible_camera=dataclasses.replace(
            scene.visible_camera,
            gain=1.0,
            vignetting=0.0,
            gradient=(0.0, 0.0),
            white_balance=(1.0, 1.0, 1.0),
        ),
    )
    rgb = _planes(scene).visible.astype(np.float64) / 255
    assert rgb.min() > 0.9  # lead white reflects ~0.9: sRGB ~0.95
    assert np.abs(rgb.mean(axis=(0, 1)) - rgb.mean()).max() < 0.03  # and neutral


def test_data_files_match_their_sha256():
    assert check_data_files() == DATA_FILES
    lib = pigment_library()
    assert len(lib.names) == len(set(lib.names)) == lib.reflectance.shape[0]
    assert 0.0 < lib.reflectance.min() and lib.reflectance.max() < 1.0


def test_render_is_fast_enough_for_training():
    import time

    render_scene((64, 64), seed=0, bands=8)  # warm the caches
    start = time.perf_counter()
    render_scene((256, 256), seed=1, bands=8)
    assert time.perf_counter() - start < 2.0  # ~0.2 s here; generous for shared CPUs


def test_cli_writes_a_scan_that_open_scan_reads_with_the_in_memory_pixels(tmp_path):
    import tifffile
    from click.testing import CliRunner
    from tilex.cli.main import main

    from tilex import open_scan
    from tilex.synthetic import MASK_FILE

    out = tmp_path / "scan"
    args = ["synth", str(out), "--model", "physical", "--recipe", "composition", "--seed", "9"]
    result = CliRunner().invoke(main, [*args, "--size", "80x112", "--bands", "3", "--tile", "32"])
    assert result.exit_code == 0, result.output
    scan = open_scan(out / "scan.json")
    assert list(scan.band_names) == ["vis400", "vis700", "ir1000"]
    sc = render_scene((80, 112), seed=9, recipe="composition", bands=3)
    codes = np.round(sc.bands[2] * 65535).astype(np.uint16)
    np.testing.assert_array_equal(tifffile.imread(out / "ir1000.tif"), codes)
    rgb = np.round(sc.visible * 255).astype(np.uint8)
    np.testing.assert_array_equal(tifffile.imread(out / "visible.tif"), rgb)
    np.testing.assert_array_equal(tifffile.imread(out / MASK_FILE).astype(bool), sc.hidden)

    bad = CliRunner().invoke(main, ["synth", str(tmp_path / "x"), "--recipe", "nothing"])
    assert bad.exit_code == 2 and "--model physical" in bad.output
