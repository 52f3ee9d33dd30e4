"""tilex.plan: every run option parsed, validated and defaulted in one frozen value.

Pinned here: each ``parse_*`` helper and spec refuses a bad value (NaN and
infinity included) with a :class:`PlanError` naming the option and the value;
:meth:`RunPlan.from_options` and :meth:`RunPlan.with_options` map the flat
option names; the combinations that cannot run are refused when the plan is
built (or resolved); :meth:`RunPlan.resolve` fills in the device's defaults;
:meth:`RunPlan.to_dict` is JSON; :meth:`RunPlan.parameters` is the
``parameters`` section of ``tilex.json``; a plan is frozen and hashable.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import tilex
from tilex.errors import DeviceError, PlanError, UsageError
from tilex.plan import (
    DEFAULT_CHUNK,
    DEFAULT_TILE,
    DEFAULT_UNIT,
    OPTIONS,
    ClusterSpec,
    DeviceSpec,
    FusionSpec,
    OutputSpec,
    RunPlan,
    TilingSpec,
    describe,
    parse_threshold,
    parse_tile,
)
from tilex.stats import StatsSpec

NAN, INF = float("nan"), float("inf")

# The ``parameters`` section of tilex.json: what sets the output's pixels, and so the
# resume fingerprint. A key added or dropped here makes every existing output unresumable.
PARAMETER_KEYS = {
    "calibrate",
    "visible_encoding",
    "norm",
    "threshold",
    "clip",
    "stats_sample",
    "stats_from",
    "tile",
    "halo",
    "precision",
    "device",
    "keep_dissimilarity",
    "ome_zarr_version",
}


def refused(match: str):
    return pytest.raises(PlanError, match=match)


# --------------------------------------------------------------------------- parse helpers


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (1, 1.0), ("0.25", 0.25), (0.5, 0.5)])
def test_parse_threshold_accepts(value, expected):
    assert parse_threshold(value) == expected and type(parse_threshold(value)) is float


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-0.1, "-0.1"),
        (1.01, "1.01"),
        (NAN, "nan"),
        (INF, "inf"),
        (-INF, "-inf"),
        ("abc", "'abc'"),
        (None, "None"),
        ("", "''"),
    ],
)
def test_parse_threshold_refuses(value, shown):
    with refused(rf"^--threshold must be a number in \[0, 1\], got {shown}$"):
        parse_threshold(value)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), (16, 16), ("384", 384), (500.0, 500), (4097, 4097)]
)
def test_parse_tile_accepts(value, expected):
    assert parse_tile(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (8, "8"),
        (0, "0"),
        (-64, "-64"),
        (16.5, "16.5"),
        (NAN, "nan"),
        (INF, "inf"),
        ("big", "'big'"),
        (True, "True"),
    ],
)
def test_parse_tile_refuses(value, shown):
    with refused(rf"^--tile must be a whole number of px >= 16, got {shown}$"):
        parse_tile(value)


def test_plan_error_is_a_usage_error_and_a_value_error():
    with pytest.raises(PlanError) as caught:
        parse_threshold(2)
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------- specs, one by one


@pytest.mark.parametrize(
    ("make", "match"),
    [
        # device and precision
        (
            lambda: DeviceSpec(precision="fp64"),
            r"--precision must be one of fp32, tf32, bf16, fp16, got 'fp64'",
        ),
        (lambda: DeviceSpec(precision=NAN), r"--precision must be one of .*, got nan"),
        # tiling
        (lambda: TilingSpec(tile=NAN), "--tile .* got nan"),
        (lambda: TilingSpec(readers=0), "readers must be a number of threads >= 1, got 0"),
        (lambda: TilingSpec(readers=NAN), "readers must be .* got nan"),
        (lambda: TilingSpec(readers=2.5), "readers must be .* got 2.5"),
        (lambda: TilingSpec(depth=0), "depth must be a queue depth >= 1, got 0"),
        (lambda: TilingSpec(depth=INF), "depth must be .* got inf"),
        (lambda: TilingSpec(blend="smooth"), "--blend must be one of exact, feather, got 'smooth'"),
        (lambda: TilingSpec(overlap=8), "--overlap is only used with --blend feather"),
        (lambda: TilingSpec(blend="feather"), "--blend feather needs --overlap PX"),
        (
            lambda: TilingSpec(blend="feather", overlap=0),
            "--overlap must be a whole number of px >= 1, got 0",
        ),
        (lambda: TilingSpec(blend="feather", overlap=NAN), "--overlap .* got nan"),
        (lambda: TilingSpec(blend="feather", overlap=INF), "--overlap .* got inf"),
        (lambda: TilingSpec(blend="feather", overlap=2.5), "--overlap .* got 2.5"),
        # fusion
        (
            lambda: FusionSpec(norm="global"),
            "--norm must be one of noise, band, pixel, got 'global'",
        ),
        (lambda: FusionSpec(threshold=NAN), r"--threshold must be a number in \[0, 1\], got nan"),
        (lambda: FusionSpec(threshold=-INF), r"--threshold .* got -inf"),
        # statistics
        (lambda: StatsSpec(sample=NAN), "--stats-sample .* got nan"),
        (lambda: StatsSpec(clip="1,inf"), "--clip .* got 1,inf"),
        # output
        (
            lambda: OutputSpec(ome_zarr_version="0.6"),
            "--ome-zarr-version must be one of 0.5, 0.4, got '0.6'",
        ),
        (lambda: OutputSpec(unit=100), "--unit must be a multiple of 16 px, at least 16, got 100"),
        (lambda: OutputSpec(unit=0), "--unit must be a multiple of 16 px, at least 16, got 0"),
        (lambda: OutputSpec(unit=NAN), "--unit must be .* got nan"),
        (lambda: OutputSpec(chunk=INF), "--chunk must be .* got inf"),
        (lambda: OutputSpec(chunk=8), "--chunk must be a multiple of 16 px, at least 16, got 8"),
        (
            lambda: OutputSpec(unit=4096, chunk=1536),
            "--unit 4096 px must be a multiple of --chunk 1536 px",
        ),
        # cluster
        (lambda: ClusterSpec(), "give --scheduler ADDRESS or --workers N, not both or neither"),
        (
            lambda: ClusterSpec(workers=0),
            "--workers must be a number of workers >= 1 or 'gpus', got 0",
        ),
        (lambda: ClusterSpec(workers=NAN), "--workers .* got nan"),
        (lambda: ClusterSpec(workers="many"), "--workers .* got 'many'"),
    ],
)
def test_specs_refuse_bad_values(make, match):
    with refused(match):
        make()


def test_device_spec_refuses_an_unknown_device():
    # a DeviceError (a UsageError, exit 2), not a PlanError: the device module owns the spelling
    with pytest.raises(
        DeviceError, match=r"device must be auto, cpu, cuda or cuda:<index>, got 'tpu'"
    ):
        DeviceSpec(device="tpu")
    with pytest.raises(DeviceError, match="got nan"):
        DeviceSpec(device=NAN)


def test_specs_normalise_what_they_accept():
    assert DeviceSpec(" CUDA:1 ") == DeviceSpec("cuda:1")
    assert DeviceSpec(None).device == "auto"
    tiling = TilingSpec(tile="64", readers="3", blend="feather", overlap="8")
    assert (tiling.tile, tiling.readers, tiling.overlap, tiling.feathered) == (64, 3, 8, True)
    assert TilingSpec(blend="feather", overlap=32, tile=64).overlap == 32  # exactly half: accepted
    assert FusionSpec(threshold="0.7", keep_normalised=1).keep_normalised is True
    out = OutputSpec(ome_zarr_version="0.4", unit="1024", chunk=256.0)
    assert (out.ome_zarr_version, out.unit, out.chunk) == ("0.4", 1024, 256)
    assert ClusterSpec(workers="2").workers == 2 and ClusterSpec(workers="gpus").workers == "gpus"
    assert ClusterSpec(scheduler="tcp://x:8786").workers is None


def test_tiling_checks_the_halo_and_the_overlap():
    TilingSpec().check_halo(12, 6)
    with refused(
        r"--tile 11 px is smaller than twice the encoder's halo \(6 px\): use --tile 16 or more"
    ):
        TilingSpec().check_halo(11, 6)
    with refused("use --tile 40 or more"):
        TilingSpec().check_halo(32, 20)
    TilingSpec(blend="feather", overlap=4).check_halo(16, 20)  # feathering needs no full halo
    with refused(
        r"--overlap 33 px is more than half the tile \(64 px\); use --overlap <= 32 or a larger --tile"
    ):
        TilingSpec(blend="feather", overlap=33).check_overlap(64)


# --------------------------------------------------------------------------- RunPlan from flat names


def test_from_options_maps_every_flat_name():
    plan = RunPlan.from_options(
        device="cpu",
        precision="bf16",
        tile=256,
        readers=3,
        depth=2,
        blend="feather",
        overlap=16,
        norm="band",
        threshold=0.6,
        keep_normalised=True,
        clip="2,98",
        stats_sample=0.1,
        ome_zarr_version="0.4",
        unit=1024,
        chunk=256,
        overwrite=True,
        resume=False,
        weights="w.safetensors",
    )
    assert plan.device == DeviceSpec("cpu", "bf16")
    assert plan.tiling == TilingSpec(tile=256, readers=3, depth=2, blend="feather", overlap=16)
    assert plan.fusion == FusionSpec("band", 0.6, True)
    assert plan.statistics == StatsSpec(clip=(2.0, 98.0), sample=0.1)
    assert plan.output == OutputSpec("0.4", 1024, 256, overwrite=True)
    assert (
        plan.weights == Path("w.safetensors") and plan.stats_from is None and plan.cluster is None
    )
    # every name of OPTIONS reaches the field it names
    for name, (part, key) in OPTIONS.items():
        assert hasattr(getattr(RunPlan(), part), key), name


def test_cluster_names_and_aliases():
    assert RunPlan.from_options(workers=2).cluster == ClusterSpec(workers=2)
    assert RunPlan.from_options(workers="gpus").distributed
    assert RunPlan.from_options(scheduler="tcp://h:8786", workers=None).cluster == ClusterSpec(
        "tcp://h:8786"
    )
    assert RunPlan.from_options(scheduler=None, workers=None).cluster is None
    assert RunPlan.from_options(keep_dissimilarity=True).fusion.keep_normalised is True
    assert RunPlan.from_options(stats_from="", weights="").stats_from is None


def test_none_keeps_the_defaults():
    names = [*OPTIONS, "weights", "stats_from", "scheduler", "workers", "keep_dissimilarity"]
    assert RunPlan.from_options(**dict.fromkeys(names)) == RunPlan()
    assert RunPlan.from_options() == RunPlan()
    plan = RunPlan.from_options(threshold=0.7, norm="pixel", unit=1024, chunk=256)
    again = plan.with_options(threshold=None, norm=None, unit=None, chunk=None, precision=None)
    assert again == plan  # with_options: None changes nothing
    # the options whose default is None take None back
    assert RunPlan.from_options(tile=384).with_options(tile=None).tiling.tile is None
    assert (
        RunPlan.from_options(stats_sample=0.2).with_options(stats_sample=None).statistics.sample
        is None
    )


def test_with_options_changes_only_what_it_names():
    plan = RunPlan.from_options(tile=384, threshold=0.7, workers=2)
    changed = plan.with_options(threshold=0.2)
    assert changed.fusion.threshold == 0.2 and plan.fusion.threshold == 0.7
    assert changed.tiling == plan.tiling and changed.cluster == plan.cluster
    assert changed.with_options(scheduler=None, workers=None).cluster is None


@pytest.mark.parametrize("name", ["tiles", "halo", "stats_sampel", "keep_normalized", "plan"])
def test_unknown_names_raise_type_error(name):
    with pytest.raises(TypeError, match=f"unknown run option '{name}'"):
        RunPlan.from_options(**{name: 1})
    with pytest.raises(TypeError, match=f"unknown run option '{name}'"):
        RunPlan().with_options(**{name: None})  # even None: a misspelt name is a mistake


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"threshold": NAN}, r"^--threshold must be a number in \[0, 1\], got nan$"),
        ({"threshold": INF}, "--threshold .* got inf"),
        ({"tile": NAN}, "--tile .* got nan"),
        ({"readers": INF}, "readers .* got inf"),
        ({"depth": NAN}, "depth .* got nan"),
        ({"clip": (NAN, 99)}, "--clip .* got nan,99"),
        ({"stats_sample": INF}, "--stats-sample .* got inf"),
        ({"blend": "feather", "overlap": NAN}, "--overlap .* got nan"),
        ({"unit": INF}, "--unit .* got inf"),
        ({"chunk": NAN}, "--chunk .* got nan"),
        ({"workers": NAN}, "--workers .* got nan"),
    ],
)
def test_nan_and_infinity_are_refused_everywhere(options, match):
    with refused(match):
        RunPlan.from_options(**options)


# --------------------------------------------------------------------------- combinations


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"resume": True, "overwrite": True},
            r"give --resume \(continue OUT\) or --overwrite .*not both",
        ),
        (
            {"blend": "feather", "overlap": 8, "resume": True},
            "--blend feather runs in one process only",
        ),
        (
            {"blend": "feather", "overlap": 8, "workers": 2},
            "--blend feather runs in one process only",
        ),
        (
            {"blend": "feather", "overlap": 8, "scheduler": "tcp://h:1"},
            "--blend feather runs in one process only",
        ),
        (
            {"scheduler": "tcp://h:1", "workers": 2},
            "give --scheduler ADDRESS or --workers N, not both",
        ),
        (
            {"blend": "feather", "overlap": 65, "tile": 128},
            r"--overlap 65 px is more than half the tile \(128 px\)",
        ),
        (
            {"norm": "pixel", "stats_from": "earlier"},
            "--stats-from reuses band statistics; --norm pixel uses none",
        ),
    ],
)
def test_combinations_that_cannot_run_are_refused(options, match):
    with refused(match):
        RunPlan.from_options(**options)


def test_combinations_are_refused_when_changed_too():
    with refused("not both"):
        RunPlan.from_options(resume=True).with_options(overwrite=True)
    with refused("--stats-from reuses band statistics"):
        RunPlan.from_options(stats_from="earlier").with_options(norm="pixel")
    # each alone is fine
    RunPlan.from_options(resume=True)
    RunPlan.from_options(blend="feather", overlap=8)
    RunPlan.from_options(stats_from="earlier")


def test_overlap_is_checked_against_the_default_tile_at_resolve():
    plan = RunPlan.from_options(blend="feather", overlap=300)  # no tile yet: cannot tell
    with refused(r"--overlap 300 px is more than half the tile \(512 px\); use --overlap <= 256"):
        plan.resolve(cuda=False)
    assert plan.resolve(cuda=True).tiling.tile == DEFAULT_TILE["cuda"] == 2048
    assert RunPlan.from_options(blend="feather", overlap=256).resolve(cuda=False).tiling.tile == 512


# --------------------------------------------------------------------------- resolve


def test_resolve_fills_the_device_defaults():
    plan = RunPlan()
    cpu, gpu = plan.resolve(cuda=False), plan.resolve(cuda=True)
    assert plan.tiling.tile is None and plan.tiling.readers is None  # the plan itself is unchanged
    assert cpu.tiling.tile == DEFAULT_TILE["cpu"] == 512 and gpu.tiling.tile == 2048
    assert cpu.tiling.readers == max(2, min(8, os.cpu_count() or 2)) == gpu.tiling.readers
    assert 2 <= cpu.tiling.readers <= 8
    assert dataclasses.replace(cpu, tiling=plan.tiling) == plan  # nothing else changes
    given = RunPlan.from_options(tile=384, readers=1).resolve(cuda=True)
    assert (given.tiling.tile, given.tiling.readers) == (384, 1)
    assert cpu.resolve(cuda=True) == cpu  # resolving twice changes nothing


# --------------------------------------------------------------------------- records


def test_to_dict_is_json():
    plan = RunPlan.from_options(
        weights=Path("/w/x.safetensors"), stats_from="a/out", workers=3, clip="2,98", tile=64
    )
    record = plan.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert set(record) == {f.name for f in dataclasses.fields(RunPlan)}
    assert record["weights"] == "/w/x.safetensors" and record["stats_from"] == "a/out"
    assert record["cluster"] == {"scheduler": None, "workers": 3}
    assert record["statistics"] == {"clip": [2.0, 98.0], "sample": None, "block": 64}
    assert record["tiling"]["tile"] == 64 and record["output"]["unit"] == DEFAULT_UNIT
    assert describe(plan) == {
        k: v for k, v in record.items() if k not in ("device", "fusion", "output", "calibration")
    }
    assert describe(RunPlan()) == {}
    feather = RunPlan.from_options(blend="feather", overlap=4).resolve(cuda=False).to_dict()
    assert json.loads(json.dumps(feather)) == feather and feather["cluster"] is None
    assert (
        feather["tiling"]["blend"],
        feather["tiling"]["overlap"],
        feather["tiling"]["tile"],
    ) == ("feather", 4, 512)


def test_parameters_are_the_manifest_section():
    plan = RunPlan.from_options(
        norm="pixel",
        threshold=0.3,
        tile=128,
        precision="fp32",
        clip="5,95",
        keep_normalised=True,
        ome_zarr_version="0.4",
    )
    parameters = plan.parameters(halo=6, device="cpu", stats_sample=None)
    assert set(parameters) == PARAMETER_KEYS
    assert parameters == {
        "norm": "pixel",
        "threshold": 0.3,
        "clip": [5.0, 95.0],
        "stats_sample": None,
        "stats_from": None,
        "tile": 128,
        "halo": 6,
        "precision": "fp32",
        "device": "cpu",
        "keep_dissimilarity": True,
        "ome_zarr_version": "0.4",
        "calibrate": "registered",
        "visible_encoding": "srgb",
    }
    assert json.loads(json.dumps(parameters)) == parameters
    # feathering adds its options; the exact mode's record never names them
    feather = RunPlan.from_options(blend="feather", overlap=12, tile=128)
    got = feather.parameters(halo=6, device="cuda:0", stats_sample=0.05)
    assert set(got) == PARAMETER_KEYS | {"blend", "overlap"}
    assert (got["blend"], got["overlap"], got["stats_sample"], got["device"]) == (
        "feather",
        12,
        0.05,
        "cuda:0",
    )
    assert (
        RunPlan.from_options(stats_from="a/b").parameters(halo=6, device="cpu", stats_sample=None)[
            "stats_from"
        ]
        == "a/b"
    )


def test_parameters_are_what_a_run_writes(tmp_path):
    """The same keys and values as the ``parameters`` tilex.json records for a real run."""
    scan = tilex.synth(tmp_path / "scan", size=(48, 40), bands=2, seed=3)
    plan = RunPlan.from_options(device="cpu", tile=32, unit=64, chunk=32, clip="0,100")
    tilex.run(scan, tmp_path / "out", plan)
    written = json.loads((tmp_path / "out" / "tilex.json").read_text())["parameters"]
    assert set(written) == PARAMETER_KEYS
    expected = plan.resolve(cuda=False).parameters(
        halo=written["halo"], device="cpu", stats_sample=written["stats_sample"]
    )
    assert written == expected
    assert written["stats_sample"] == 1.0  # 2 squares of 64 px: the auto sample takes all


# --------------------------------------------------------------------------- a value


def test_a_plan_is_frozen_and_hashable():
    plan = RunPlan.from_options(tile=384, clip="2,98", workers=2, weights="w.safetensors")
    same = RunPlan.from_options(
        weights=Path("w.safetensors"), workers="2", clip=(2, 98), tile="384"
    )
    assert plan == same and hash(plan) == hash(same)
    assert len({plan, same, RunPlan()}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.weights = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.tiling.tile = 512  # type: ignore[misc]
    assert plan.layout().unit == DEFAULT_UNIT and plan.layout().chunk == DEFAULT_CHUNK


def test_needs_statistics_follows_the_norm():
    assert RunPlan().needs_statistics and RunPlan.from_options(norm="band").needs_statistics
    assert not RunPlan.from_options(norm="pixel").needs_statistics
    assert not RunPlan().distributed
