"""tilex.omezarr: the streaming OME-Zarr sink, checked by independent validators and by
tilex's invariants (levels, reductions, chunk/shard shapes, write-once, metadata last), and
its lifecycle (the state machine, cluster mode)."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage

from tilex.errors import OutputError, OutputExistsError
from tilex.grid import Tile
from tilex.omezarr import Compression, LayoutSpec, OmeZarrSink, SinkState, UnitSink, open_output
from tilex.pyramid import level_shapes, reduce_mean, reduce_mean_uint8, reduce_mode
from tilex.sink import MemorySink, Prepared, ResumableSink, RunInfo, RunResults, Sink, TileResult
from tilex.validate import validate_output

UNIT, CHUNK, TILE = 1024, 256, 300  # TILE does not divide UNIT: tiles are clipped to units

BANDS = ("uv", "ir_1000nm", "xray")
WAVELENGTHS = (365.0, 1000.0, None)


# --------------------------------------------------------------------------- helpers


def morton_key(uy: int, ux: int) -> int:
    key = 0
    for bit in range(16):
        key |= ((ux >> bit) & 1) << (2 * bit) | ((uy >> bit) & 1) << (2 * bit + 1)
    return key


def unit_order(shape: tuple[int, int], unit: int, order: str = "morton") -> list[tuple[int, int]]:
    cells = [(uy, ux) for uy in range(-(-shape[0] // unit)) for ux in range(-(-shape[1] // unit))]
    if order == "morton":
        return sorted(cells, key=lambda c: morton_key(*c))
    if order == "reverse":
        return sorted(cells, key=lambda c: -morton_key(*c))
    return cells  # row-major


def make_result(shape: tuple[int, int], channels: int, n_bands: int, seed: int = 0) -> dict:
    """A whole random result: every field of a TileResult over the full image."""
    rng = np.random.default_rng(seed)
    h, w = shape
    score = rng.random((h, w), np.float32)
    score[score < 0.4] = 0
    winner = np.where(score > 0, rng.integers(1, n_bands + 1, (h, w)), 0).astype(np.uint8)
    return {
        "winner": winner,
        "score": score,
        "collage": rng.normal(size=(channels, h, w)).astype(np.float32),
        "overlay": rng.integers(0, 256, (3, h, w), dtype=np.uint8),
        "normalised": rng.random((n_bands, h, w), np.float32),
    }


def tiles_in_unit_order(
    result: dict, unit: int, tile: int = TILE, order: str = "morton"
) -> Iterator[TileResult]:
    """The engine's order: tiles of one unit contiguous, units in Morton order."""
    h, w = result["winner"].shape
    for uy, ux in unit_order((h, w), unit, order):
        ys, ye = uy * unit, min(h, (uy + 1) * unit)
        xs, xe = ux * unit, min(w, (ux + 1) * unit)
        for y0 in range(ys, ye, tile):
            for x0 in range(xs, xe, tile):
                y1, x1 = min(y0 + tile, ye), min(x0 + tile, xe)
                yield TileResult(
                    (y0, y1, x0, x1),
                    result["winner"][y0:y1, x0:x1],
                    result["score"][y0:y1, x0:x1],
                    result["collage"][:, y0:y1, x0:x1],
                    result["overlay"][:, y0:y1, x0:x1],
                    result["normalised"][:, y0:y1, x0:x1],
                )


def run_info(shape: tuple[int, int], channels: int = 3, keep: bool = True) -> RunInfo:
    return RunInfo(
        shape=shape,
        band_names=BANDS,
        wavelengths=WAVELENGTHS,
        channels=channels,
        pixel_size_um=2.5,
        keep_normalised=keep,
        provenance={"inputs": {"path": "scan.json"}, "parameters": {"threshold": 0.5}},
    )


class CountingStore(zarr.storage.LocalStore):
    """A LocalStore that logs every set, and every get that found data, per key."""

    def __init__(self, root, log: list, payloads: dict[int, bytes]) -> None:
        super().__init__(root)
        self._log = log
        self.payloads = payloads  # log index -> a metadata document as written then

    async def set(self, key, value):  # type: ignore[override]
        self._log.append(("set", str(self.root), key))
        if is_metadata(key):
            self.payloads[len(self._log) - 1] = value.to_bytes()
        await super().set(key, value)

    async def get(self, key, prototype=None, byte_range=None):  # type: ignore[override]
        found = await super().get(key, prototype, byte_range)
        if found is not None:
            self._log.append(("get", str(self.root), key))
        return found

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


class CountingSink(OmeZarrSink):
    def __init__(self, *args, **kwargs) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.payloads: dict[int, bytes] = {}
        super().__init__(*args, **kwargs)

    def _store(self, path: Path):
        return CountingStore(path, self.log, self.payloads)


def is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in ("zarr.json", ".zarray", ".zattrs", ".zgroup")


def build(path: Path, shape, *, version: str, channels: int = 3, order: str = "morton", seed=0):
    result = make_result(shape, channels, len(BANDS), seed)
    info = run_info(shape, channels)
    sink = CountingSink(path, version=version, unit=UNIT, chunk=CHUNK)
    memory = MemorySink()
    sink.open(info)
    memory.open(info)
    for t in tiles_in_unit_order(result, UNIT, order=order):
        sink.write(t)
        memory.write(t)
    sink.close()
    memory.close()
    return sink, memory


# --------------------------------------------------------------------------- fixtures

SHAPES = {"multi-unit": (2500, 1700), "one-unit": (700, 900)}


@pytest.fixture(scope="module", params=[(v, s) for v in ("0.5", "0.4") for s in SHAPES])
def built(request, tmp_path_factory):
    version, kind = request.param
    path = tmp_path_factory.mktemp(f"out-{version}-{kind}") / "OUT"
    sink, memory = build(path, SHAPES[kind], version=version)
    return path, version, sink, memory


# --------------------------------------------------------------------------- tests


def test_sink_follows_the_protocol(tmp_path):
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    assert isinstance(sink, Sink) and isinstance(sink, ResumableSink)
    assert sink.write_unit == UNIT


def test_independent_validators_accept(built):
    path, version, _, _ = built
    results = validate_output(path)
    assert [r.name for r in results] == [
        "tilex-layout", "ome-zarr-models", "ngff-json-schema", "yaozarrs", "napari-ome-zarr"
    ]  # fmt: skip
    failed = [str(r) for r in results if not r.ok]
    assert not failed, failed
    ran = [r.name for r in results if not r.skipped]
    assert "tilex-layout" in ran


def test_level_zero_equals_the_in_memory_result(built):
    path, _, _, memory = built
    out = open_output(path)
    np.testing.assert_array_equal(out["winner"].levels[0][...], memory.winner)
    np.testing.assert_array_equal(out["score"].levels[0][0], memory.score)
    np.testing.assert_array_equal(out["collage"].levels[0][...], memory.collage)
    np.testing.assert_array_equal(out["overlay"].levels[0][...], memory.overlay)
    np.testing.assert_array_equal(out["dissimilarity"].levels[0][...], memory.normalised)
    assert memory.written.max() == 1


@pytest.mark.parametrize(
    ("image", "reduce"),
    [
        ("collage", reduce_mean),
        ("score", reduce_mean),
        ("overlay", reduce_mean_uint8),
        ("winner", reduce_mode),
        ("dissimilarity", reduce_mean),
    ],
)
def test_each_level_is_the_reduction_of_the_one_below(built, image, reduce):
    path, _, _, _ = built
    levels = open_output(path)[image].levels
    rng = np.random.default_rng(3)
    for k in range(len(levels) - 1):
        below, above = levels[k], levels[k + 1]
        h, w = above.shape[-2:]
        # sampled blocks, including the last row/column (odd edges)
        for by, bx in [(0, 0), (h - 1, w - 1), *rng.integers(0, (h, w), (4, 2)).tolist()]:
            by0, bx0 = max(0, by - 40), max(0, bx - 40)
            block = below[..., 2 * by0 : 2 * (by + 1), 2 * bx0 : 2 * (bx + 1)]
            np.testing.assert_array_equal(reduce(block), above[..., by0 : by + 1, bx0 : bx + 1])


def test_levels_chunks_and_shards(built):
    path, version, _, _ = built
    out = open_output(path)
    shape = tuple(out.manifest["output"]["shape"])
    expected = level_shapes(shape, CHUNK)
    counts = {name: len(img.levels) for name, img in out.images.items()}
    assert set(counts.values()) == {len(expected)}  # labels and images alike
    for name, img in out.images.items():
        assert [s[-2:] for s in img.shapes] == expected
        for array in img.levels:
            lead = () if name == "winner" else (1,)
            assert array.chunks == (*lead, CHUNK, CHUNK)
            if version == "0.5":
                assert array.metadata.zarr_format == 3
                assert array.shards == (*lead, UNIT, UNIT)
                assert array.metadata.dimension_names == (
                    ("y", "x") if name == "winner" else ("c", "y", "x")
                )
            else:
                assert array.metadata.zarr_format == 2
                assert array.shards is None
                assert array.metadata.dimension_separator == "/"


def test_every_shard_or_chunk_is_written_once_and_never_read(built):
    _, _, sink, _ = built
    sets = Counter(
        (root, key) for op, root, key in sink.log if op == "set" and not is_metadata(key)
    )
    reads = [(root, key) for op, root, key in sink.log if op == "get" and not is_metadata(key)]
    assert sets, "no data written"
    assert max(sets.values()) == 1, [k for k, n in sets.items() if n > 1][:5]
    assert reads == []


def test_group_metadata_is_written_after_all_data(built):
    path, version, sink, _ = built
    data = [i for i, (op, _, key) in enumerate(sink.log) if op == "set" and not is_metadata(key)]
    # the documents as they were written: the OME ones name multiscales or labels
    ome = [i for i, doc in sink.payloads.items() if b"multiscales" in doc or b'"labels"' in doc]
    assert len(ome) >= len(open_output(path).images) + 1  # every image, and labels/
    assert min(ome) > max(data)
    assert json.loads((path / "tilex.json").read_text())["state"] == "complete"


def test_metadata_content(built):
    path, version, _, _ = built
    out = open_output(path)
    manifest = out.manifest
    assert manifest["inputs"] == {"path": "scan.json"}  # RunInfo.provenance kept
    assert manifest["output"]["ome_zarr_version"] == version
    assert [b["name"] for b in out.bands] == list(BANDS)
    ms = out["collage"].attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][1]["unit"] == "micrometer"
    for k, ds in enumerate(ms["datasets"]):
        scale, translation = ds["coordinateTransformations"]
        assert scale["scale"] == [1.0, 2.5 * 2**k, 2.5 * 2**k]
        assert translation["translation"] == [0.0, 2.5 * (2**k - 1) / 2, 2.5 * (2**k - 1) / 2]
    label = out["winner"].attrs["image-label"]
    assert [c["label-value"] for c in label["colors"]] == [1, 2, 3]
    assert [(p["band"], p["wavelength_nm"]) for p in label["properties"]] == list(
        zip(BANDS, WAVELENGTHS, strict=True)
    )
    for name in ("collage", "score", "dissimilarity"):
        for ch in out[name].attrs["omero"]["channels"]:
            win = ch["window"]
            assert win["min"] <= win["start"] < win["end"] <= win["max"]
    assert out["dissimilarity"].channel_labels == ["uv (365 nm)", "ir_1000nm (1000 nm)", "xray"]
    overlay = out["overlay"].attrs["omero"]["channels"]
    assert [c["window"]["end"] for c in overlay] == [255.0] * 3
    score = out["score"].attrs["omero"]["channels"][0]["window"]
    values = np.asarray(out["score"].levels[0][0]).ravel()
    np.testing.assert_allclose(
        [score["start"], score["end"]], np.percentile(values, (0.5, 99.5)), atol=0.02
    )


@pytest.mark.parametrize("order", ["reverse", "rows"])
def test_any_unit_order_gives_the_same_output(tmp_path, order):
    shape = (2100, 1300)  # 3 x 2 units: level-1 units with 4, 2 and 1 children
    build(tmp_path / "morton", shape, version="0.5", seed=5)
    sink, _ = build(tmp_path / "other", shape, version="0.5", order=order, seed=5)
    a, b = open_output(tmp_path / "morton"), open_output(tmp_path / "other")
    for name in a.images:
        for la, lb in zip(a[name].levels, b[name].levels, strict=True):
            np.testing.assert_array_equal(la[...], lb[...])
    assert (
        max(Counter((r, k) for op, r, k in sink.log if op == "set" and not is_metadata(k)).values())
        == 1
    )


def test_tiles_straddling_units_and_a_single_tile(tmp_path):
    shape = (1300, 1100)
    result = make_result(shape, 2, len(BANDS), seed=9)
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK, compressor=None)
    sink.open(run_info(shape, channels=2, keep=False))
    sink.write(
        TileResult(
            (0, 1300, 0, 1100), *(result[k] for k in ("winner", "score", "collage", "overlay"))
        )
    )
    sink.close()
    out = open_output(tmp_path / "OUT")
    assert "dissimilarity" not in out.images
    np.testing.assert_array_equal(out["collage"].levels[0][...], result["collage"])
    np.testing.assert_array_equal(out["winner"].levels[1][...], reduce_mode(result["winner"]))


def test_memory_stays_bounded_in_morton_order(tmp_path):
    shape = (4 * UNIT, 4 * UNIT - 100)
    result = make_result(shape, 1, len(BANDS), seed=2)
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK, compressor=Compression("lz4", 1))
    sink.open(run_info(shape, channels=1, keep=False))
    most = 0
    for t in tiles_in_unit_order(result, UNIT, tile=512):
        sink.write(t)
        most = max(most, *sink._stream.held())
    sink.close()
    assert most == 1  # one unit per level in flight


def test_a_cascade_of_parents_frees_each_unit_once_it_is_written(tmp_path, monkeypatch):
    """The last level-0 unit completes a parent on every level above it; a unit that is
    written must not stay in memory while its parents are assembled (the peak would
    grow by a unit per level, with the scan's size)."""
    import weakref

    from tilex.omezarr.layout import OutputLayout

    buffers: list[weakref.ref] = []  # each unit's score buffer
    most = []
    new_unit, assemble = OutputLayout.new_unit, OutputLayout.assemble_parent

    def track(unit):
        buffers.append(weakref.ref(unit.data["score"]))
        return unit

    def assembled(self, *args, **kwargs):
        unit = assemble(self, *args, **kwargs)  # made by new_unit: tracked there
        most.append((unit.level, sum(ref() is not None for ref in buffers)))
        return unit

    monkeypatch.setattr(OutputLayout, "new_unit", lambda self, *a: track(new_unit(self, *a)))
    monkeypatch.setattr(OutputLayout, "assemble_parent", assembled)
    shape = (4 * UNIT, 4 * UNIT)  # 16 level-0 units; the last completes levels 1 to 4
    result = make_result(shape, 1, len(BANDS), seed=3)
    sink = OmeZarrSink(
        tmp_path / "OUT", unit=UNIT, chunk=CHUNK, compressor=Compression("lz4", 1), workers=1
    )
    sink.open(run_info(shape, channels=1, keep=False))
    for t in tiles_in_unit_order(result, UNIT, tile=512):
        sink.write(t)
    sink.close()
    assert max(level for level, _ in most) >= 4  # the cascade reached level 4
    # the parent just assembled and, at most, its child still being written
    assert max(n for _, n in most) <= 2
    score = open_output(tmp_path / "OUT")["score"].levels
    np.testing.assert_array_equal(score[0][0], result["score"])
    np.testing.assert_array_equal(score[4][0], reduce_mean(reduce_mean(score[2][0])))


def test_a_resume_writes_its_orphan_parents_before_the_first_tile(tmp_path):
    """A parent whose children were all written before a kill, but not itself, is an orphan:
    the resumed run rebuilds it from its children read back, and finishes writing it
    before the first tile arrives, so its buffers never add to the first unit's."""
    unit, chunk = 256, 128
    shape = (2 * unit, 4 * unit)  # level 0: 2 x 4 units; level 1: 1 x 2
    result = make_result(shape, 1, len(BANDS), seed=4)
    path = tmp_path / "OUT"
    tiles = list(tiles_in_unit_order(result, unit, tile=200))
    killed = OmeZarrSink(path, unit=unit, chunk=chunk, compressor=Compression("lz4", 1))
    killed.open(run_info(shape, channels=1))
    for t in tiles:
        if t.region[2] >= 2 * unit:  # the first four units (Morton order) complete L1 (0, 0)
            break
        killed.write(t)
    killed._stream._drain(0)
    killed.abort()
    (path / ".journal" / "L1-0-0").unlink()  # as if killed before the parent's marker

    resumed = OmeZarrSink(
        path, unit=unit, chunk=chunk, compressor=Compression("lz4", 1), resume=True
    )
    resumed.open(run_info(shape, channels=1))
    assert resumed._stream._pending == []  # the orphan's write is done, not in flight
    assert (path / ".journal" / "L1-0-0").is_file()
    rest = [t for t in tiles if not resumed.skip(Tile(0, 0, t.region, t.region))]
    assert len(rest) == len(tiles) // 2
    for t in rest:
        resumed.write(t)
    resumed.close()
    score = open_output(path)["score"].levels
    np.testing.assert_array_equal(score[0][0], result["score"])
    np.testing.assert_array_equal(score[1][0], reduce_mean(result["score"]))


def test_abort_leaves_an_incomplete_output(tmp_path):
    shape = (2500, 1700)
    result = make_result(shape, 2, len(BANDS))
    path = tmp_path / "OUT"
    sink = OmeZarrSink(path, unit=UNIT, chunk=CHUNK)
    sink.open(run_info(shape, channels=2))
    for i, t in enumerate(tiles_in_unit_order(result, UNIT)):
        if i == 20:
            break
        sink.write(t)
    assert json.loads((path / "tilex.json").read_text())["state"] == "running"
    sink.abort()
    assert json.loads((path / "tilex.json").read_text())["state"] == "failed"
    with pytest.raises(OutputError, match="incomplete"):
        open_output(path)
    with pytest.raises(OutputError, match="incomplete"):
        validate_output(path)
    partial = open_output(path, require_complete=False)
    assert "multiscales" not in partial["collage"].attrs
    ome_zarr_models = pytest.importorskip("ome_zarr_models")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do: it is not an image
        ome_zarr_models.open_ome_zarr(zarr.open_group(path / "score.ome.zarr", mode="r"))


def test_close_refuses_missing_tiles(tmp_path):
    shape = (1300, 1100)
    result = make_result(shape, 2, len(BANDS))
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    sink.open(run_info(shape, channels=2))
    for t in list(tiles_in_unit_order(result, UNIT))[:-1]:
        sink.write(t)
    with pytest.raises(OutputError, match="incomplete"):
        sink.close()
    assert json.loads((tmp_path / "OUT" / "tilex.json").read_text())["state"] == "failed"


def test_a_tile_into_a_finished_unit_is_refused(tmp_path):
    shape = (700, 900)
    result = make_result(shape, 2, len(BANDS))
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    sink.open(run_info(shape, channels=2))
    tiles = list(tiles_in_unit_order(result, UNIT))
    for t in tiles:
        sink.write(t)
    with pytest.raises(OutputError, match="already written"):
        sink.write(tiles[0])
    sink.abort()


def test_bad_tiles_are_refused(tmp_path):
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    sink.open(run_info((100, 100), channels=2))
    ok = make_result((100, 100), 2, len(BANDS))
    with pytest.raises(OutputError, match="outside the output shape"):
        sink.write(
            TileResult((0, 101, 0, 100), ok["winner"], ok["score"], ok["collage"], ok["overlay"])
        )
    with pytest.raises(OutputError, match="collage has shape"):
        sink.write(
            TileResult(
                (0, 100, 0, 100), ok["winner"], ok["score"], ok["collage"][:1], ok["overlay"]
            )
        )
    with pytest.raises(OutputError, match="no 'normalised'"):
        sink.write(
            TileResult((0, 100, 0, 100), ok["winner"], ok["score"], ok["collage"], ok["overlay"])
        )
    sink.abort()


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "OUT"
    build(path, (300, 300), version="0.5")
    with pytest.raises(OutputExistsError, match="already exists"):
        OmeZarrSink(path)
    sink = OmeZarrSink(path, overwrite=True, unit=UNIT, chunk=CHUNK, version="0.4")
    result = make_result((300, 200), 3, len(BANDS))
    sink.open(run_info((300, 200)))
    for t in tiles_in_unit_order(result, UNIT):
        sink.write(t)
    sink.close()
    assert open_output(path).version == "0.4"
    assert not (path / "collage.ome.zarr" / "zarr.json").exists()  # old v3 files are gone


def test_overwrite_never_deletes_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(OutputError, match="not empty"):
        OmeZarrSink(tmp_path, overwrite=True)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": "0.6"}, "version"),
        ({"unit": 1000, "chunk": 512}, "multiple"),
        ({"unit": 256, "chunk": 512}, "multiple"),
    ],
)
def test_bad_layouts_are_refused(tmp_path, kwargs, match):
    with pytest.raises(OutputError, match=match):
        OmeZarrSink(tmp_path / "OUT", **kwargs)


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_manifest_is_as_readable_as_the_arrays(tmp_path, umask):
    # colleagues on a shared server read tilex.json wherever they may read the images
    previous = os.umask(umask)
    try:
        build(tmp_path / "OUT", (300, 200), version="0.5")
    finally:
        os.umask(previous)
    modes = {
        name: stat.S_IMODE((tmp_path / "OUT" / name).stat().st_mode)
        for name in ("tilex.json", "collage.ome.zarr/zarr.json")
    }
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


# --------------------------------------------------------------------------- lifecycle


def manifest_of(path: Path) -> dict:
    return json.loads((path / "tilex.json").read_text())


def write_all(sink: OmeZarrSink, shape, channels: int = 2, keep: bool = True) -> None:
    result = make_result(shape, channels, len(BANDS))
    for t in tiles_in_unit_order(result, UNIT):
        if not keep:
            t = TileResult(t.region, t.winner, t.score, t.collage, t.overlay)
        sink.write(t)


def test_states_follow_the_lifecycle(tmp_path):
    path, shape = tmp_path / "OUT", (300, 200)
    sink = OmeZarrSink(path, unit=UNIT, chunk=CHUNK)
    assert sink.state == SinkState.NEW
    assert sink.prepare(run_info(shape, channels=2)) == Prepared()
    assert (sink.state, manifest_of(path)["state"]) == (SinkState.PREPARED, "statistics")
    with pytest.raises(OutputError, match="already prepared"):
        sink.prepare(run_info(shape, channels=2))
    with pytest.raises(OutputError, match="not open for writing"):
        sink.close()
    info = replace(run_info(shape, channels=2), stats={"bands": ["uv"]})
    sink.open(info)
    assert (sink.state, manifest_of(path)["state"]) == (SinkState.RUNNING, "running")
    assert manifest_of(path)["stats"] == {"bands": ["uv"]}  # saved as the main pass opens
    with pytest.raises(OutputError, match="already opened"):
        sink.open(info)
    write_all(sink, shape)
    sink.close(RunResults(timings={"tiles_s": 1.23456}))
    manifest = manifest_of(path)
    assert (sink.state, manifest["state"], manifest["timings"]) == (
        SinkState.COMPLETE,
        "complete",
        {"tiles_s": 1.235},
    )
    assert (
        "cluster" not in manifest
        and not (path / ".journal").exists()
        and not (path / ".pyramid").exists()
    )
    sink.abort()  # nothing to do once complete
    assert (sink.state, manifest_of(path)["state"]) == (SinkState.COMPLETE, "complete")


def test_abort_marks_a_prepared_output_failed_once(tmp_path):
    path = tmp_path / "OUT"
    sink = OmeZarrSink(path, unit=UNIT, chunk=CHUNK)
    sink.prepare(run_info((300, 200)))
    sink.abort()
    sink.abort()
    assert (sink.state, manifest_of(path)["state"]) == (SinkState.FAILED, "failed")
    with pytest.raises(OutputError, match="cannot go from failed to running|already opened"):
        sink.open(run_info((300, 200)))


def test_abort_before_prepare_touches_nothing(tmp_path):
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    sink.abort()
    assert sink.state == SinkState.FAILED and not (tmp_path / "OUT").exists()


def test_open_refuses_another_run_than_prepared(tmp_path):
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    sink.prepare(run_info((300, 200)))
    with pytest.raises(OutputError, match="another run"):
        sink.open(run_info((300, 201)))
    assert manifest_of(tmp_path / "OUT")["state"] == "failed"


def test_resume_of_a_complete_output_has_nothing_to_do(tmp_path):
    path, shape = tmp_path / "OUT", (300, 200)
    build(path, shape, version="0.5")
    sink = OmeZarrSink(path, unit=UNIT, chunk=CHUNK, resume=True)
    prepared = sink.prepare(run_info(shape))
    assert prepared.complete and sink.state == SinkState.COMPLETE
    with pytest.raises(OutputError, match="already complete"):
        sink.open(run_info(shape))
    sink.abort()
    assert manifest_of(path)["state"] == "complete"


def test_layout_or_its_parts_not_both(tmp_path):
    spec = LayoutSpec(unit=UNIT, chunk=CHUNK, compressor=None)
    assert OmeZarrSink(tmp_path / "a", spec).spec == spec
    assert OmeZarrSink(tmp_path / "b", unit=UNIT, chunk=CHUNK, compressor=None).spec == spec
    with pytest.raises(TypeError, match="not both"):
        OmeZarrSink(tmp_path / "c", spec, unit=UNIT)


def cluster_run(path: Path, shape, *, skip_last: bool = False) -> OmeZarrSink:
    """What tilex.distributed does, in one process: UnitSink per level-0 unit, then the levels."""
    info = run_info(shape, channels=2)
    result = make_result(shape, 2, len(BANDS))
    sink = OmeZarrSink(path, unit=UNIT, chunk=CHUNK)
    sink.prepare(info)
    sink.open(info, external=True)
    layout = sink.layout
    units = layout.units(0)[:-1] if skip_last else layout.units(0)
    for index in units:
        unit = UnitSink(layout, index)
        for t in tiles_in_unit_order(result, UNIT):
            if (t.region[0] // UNIT, t.region[2] // UNIT) == index:
                unit.write(t)
        unit.close()
    for level in range(1, len(layout.shapes)):
        for index in layout.units(level):
            if all(layout.journal.has(level - 1, c) for c in layout.children(level, index)):
                layout.commit_unit(level, index, layout.assemble_parent(level, index).data)
    return sink


def test_cluster_mode_writes_the_same_output(tmp_path):
    shape = (2500, 1700)
    streamed, _ = build(tmp_path / "stream", shape, version="0.5", channels=2)
    sink = cluster_run(tmp_path / "cluster", shape)
    with pytest.raises(OutputError, match="refused"):
        sink.write(next(tiles_in_unit_order(make_result(shape, 2, len(BANDS)), UNIT)))
    sink.close(RunResults(timings={"tiles_s": 2.0}, cluster={"scheduler": None, "workers": 2}))
    assert manifest_of(tmp_path / "cluster")["cluster"] == {"scheduler": None, "workers": 2}
    a, b = open_output(tmp_path / "stream"), open_output(tmp_path / "cluster")
    for name in a.images:
        for la, lb in zip(a[name].levels, b[name].levels, strict=True):
            np.testing.assert_array_equal(la[...], lb[...])
        assert a[name].attrs == b[name].attrs


def test_cluster_close_refuses_missing_units(tmp_path):
    sink = cluster_run(tmp_path / "OUT", (2500, 1700), skip_last=True)
    with pytest.raises(OutputError, match=r"incomplete: \d+ write unit\(s\) were never written"):
        sink.close()
    assert (sink.state, manifest_of(tmp_path / "OUT")["state"]) == (SinkState.FAILED, "failed")


def test_unit_sink_refuses_a_tile_outside_its_unit_and_a_partial_unit(tmp_path):
    sink = OmeZarrSink(tmp_path / "OUT", unit=UNIT, chunk=CHUNK)
    sink.open(run_info((1300, 1100), channels=2, keep=False), external=True)
    tile = next(tiles_in_unit_order(make_result((1300, 1100), 2, len(BANDS)), UNIT))
    unit = UnitSink(sink.layout, (1, 1))
    with pytest.raises(OutputError, match="outside level 0 unit"):
        unit.write(TileResult(tile.region, tile.winner, tile.score, tile.collage, tile.overlay))
    with pytest.raises(OutputError, match="received 0 of"):
        unit.close()
    sink.abort()
