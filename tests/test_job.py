"""``tilex.run``: the plan and its overrides, refusals before any work, what the report says."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tilex
from tilex.errors import PlanError
from tilex.plan import RunPlan
from tilex.scan import open_scan
from tilex.sink import MemorySink, RunResults


@pytest.fixture(scope="module")
def scan():
    rng = np.random.default_rng(7)
    bands = [(f"b{i}", 500.0 + 100 * i, rng.random((90, 70), dtype=np.float32)) for i in range(2)]
    return open_scan(visible=rng.random((3, 90, 70), dtype=np.float32), bands=bands)


def test_keywords_override_the_plan_and_the_report_holds_the_resolved_plan(scan):
    plan = RunPlan.from_options(norm="pixel", tile=48)
    report = tilex.run(scan, None, plan, device="cpu", threshold=0.7)
    assert report.plan.fusion.norm == "pixel" and report.plan.fusion.threshold == 0.7
    assert report.plan.tiling.tile == 48 and report.plan.tiling.readers >= 2  # resolved for the CPU
    assert plan.fusion.threshold == 0.5, "the caller's plan is a value: never changed"
    assert report.stats is None  # norm pixel measures none
    assert isinstance(report.sink, MemorySink) and (report.sink.written == 1).all()


def test_the_same_options_as_keywords_or_as_a_plan_give_the_same_result(scan):
    by_keywords = tilex.run(scan, None, device="cpu", tile=32, stats_sample=1.0).sink
    plan = RunPlan.from_options(device="cpu", tile=32, stats_sample=1.0)
    by_plan = tilex.run(scan, None, plan).sink
    np.testing.assert_array_equal(by_keywords.winner, by_plan.winner)
    np.testing.assert_array_equal(by_keywords.score, by_plan.score)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": float("nan")}, "--threshold"),
        ({"tile": 8}, "--tile"),
        ({"resume": True, "overwrite": True}, "not both"),
        ({"blend": "feather", "overlap": 8, "workers": 2}, "one process only"),
    ],
)
def test_bad_options_are_refused_before_the_output_is_made(scan, tmp_path, options, message):
    out = tmp_path / "OUT"
    with pytest.raises(PlanError, match=message):
        tilex.run(scan, out, **options)
    assert not out.exists()


def test_resume_needs_an_output_folder(scan):
    with pytest.raises(PlanError, match="need an output folder"):
        tilex.run(scan, None, device="cpu", resume=True)


def test_unknown_options_are_a_type_error(scan):
    with pytest.raises(TypeError, match="unknown run option 'tiles'"):
        tilex.run(scan, None, tiles=64)


def test_a_sink_receives_the_provenance_and_the_results_as_values(scan):
    sink = MemorySink()
    report = tilex.run(scan, sink, device="cpu", tile=64, stats_sample=1.0)
    info = sink.info
    # the statistics reach the sink in RunInfo
    assert list(info.stats["lo"]) == list(report.stats.lo)
    assert info.provenance["parameters"]["tile"] == 64
    assert json.loads(json.dumps(info.record()))["plan"]["tiling"]["tile"] == 64
    with pytest.raises(TypeError, match="read-only"):
        info.provenance["parameters"]["tile"] = 128
    assert isinstance(sink.results, RunResults) and sink.results.timings["tiles_s"] > 0


def test_the_library_leaves_the_allocator_alone(scan, monkeypatch):
    import tilex.device

    called = []
    monkeypatch.setattr(tilex.device, "tune_host_allocator", lambda: called.append(True))
    tilex.run(scan, None, device="cpu", norm="pixel", tile=64)
    assert not called


def test_a_model_fitted_ahead_gives_the_run_it_would_fit_and_a_wrong_one_is_refused(scan, tmp_path):
    from tilex.job import fit_calibration

    plan = RunPlan.from_options(device="cpu", tile=48)
    fitted = fit_calibration(scan, plan)
    ahead = tilex.run(scan, None, plan, fitted=fitted).sink
    itself = tilex.run(scan, None, plan).sink
    for name in ("winner", "score", "evidence"):
        np.testing.assert_array_equal(getattr(ahead, name), getattr(itself, name))
    other = fit_calibration(scan, plan.with_options(calibrate="affine"))
    out = tmp_path / "OUT"
    with pytest.raises(
        ValueError,
        match="fitted ahead does not fit this run: it is --calibrate affine; this run has --calibrate registered",
    ):
        tilex.run(scan, out, plan, fitted=other)
    assert not (out / "tilex.json").exists()
