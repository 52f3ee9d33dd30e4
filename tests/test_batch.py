"""``tilex batch`` / ``tilex.batch``: a campaign in one process, nothing redone, failures recorded.

Scans are small ``tilex.synth`` scans (at most 128 px, 3 bands); where a test
needs a scan interrupted midway, it uses 64 px write units so that a scan has
several.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tilex.cli.batch import batch_bars
from tilex.cli.main import main

import tilex
from tilex.campaign import BatchRecord, JobFileError, summary_table
from tilex.campaign.jobs import JobSpec, base_name, name_jobs, read_sources
from tilex.campaign.record import ScanRecord
from tilex.errors import OutputBusyError, OutputError, PlanError
from tilex.lock import output_lock
from tilex.testing import FAILPOINT_ENV

OPTIONS = {"device": "cpu", "tile": 64}
LAYOUT = {**OPTIONS, "unit": 64, "chunk": 32}  # a 128x128 scan is 2x2 write units
CLI_OPTIONS = ["--device", "cpu", "--tile", "64"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def states(outdir: Path) -> dict[str, str]:
    return {s.name: s.state for s in BatchRecord.read(outdir).scans}


def manifest(out: Path) -> dict:
    return json.loads((out / "tilex.json").read_text())


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """Four small scans by name (their folders' names)."""
    root = tmp_path_factory.mktemp("scans")
    sizes = {"front": (96, 128), "back": (128, 96), "detail": (80, 80), "panel": (128, 128)}
    return {
        name: tilex.synth(root / name, size=size, bands=3, seed=i).parent
        for i, (name, size) in enumerate(sizes.items())
    }


def corrupt_copy(scan: Path, dest: Path) -> Path:
    """A copy of ``scan`` whose last band file is cut to 60 % of its bytes."""
    shutil.copytree(scan, dest)
    band = dest / json.loads((dest / "scan.json").read_text())["bands"][-1]["file"]
    with open(band, "r+b") as f:
        f.truncate(band.stat().st_size * 6 // 10)
    return dest


# --------------------------------------------------------------------------- one failure stops nothing


def test_a_corrupt_scan_is_recorded_the_complete_one_skipped_the_rest_done(scans, tmp_path):
    bad = corrupt_copy(scans["back"], tmp_path / "damaged")
    outdir = tmp_path / "campaign"
    tilex.run(scans["detail"], outdir / "detail", **OPTIONS)  # already complete
    before = (outdir / "detail" / "tilex.json").read_bytes()

    result = invoke("-q", "batch", scans["front"], bad, scans["detail"], scans["panel"],
                    "-o", outdir, *CLI_OPTIONS)  # fmt: skip

    assert result.exit_code == 1, result.output
    assert states(outdir) == {
        "front": "done",
        "damaged": "failed",
        "detail": "skipped",
        "panel": "done",
    }
    for name in ("front", "panel"):
        assert manifest(outdir / name)["state"] == "complete"
    # skipped, not recomputed: its record is untouched
    assert (outdir / "detail" / "tilex.json").read_bytes() == before
    # the failure reads as tilex run would print it for that scan
    alone = invoke("run", bad, "-o", tmp_path / "alone", *CLI_OPTIONS)
    assert alone.exit_code == 2
    (line,) = alone.stderr.splitlines()
    error = BatchRecord.read(outdir).get("damaged").error
    assert line == f"tilex: error: {error}" and "truncated" in error
    assert "damaged" in result.stdout and error in result.stdout
    assert "4 scans: 2 done, 1 skipped, 1 failed" in result.stdout

    # the report again, and the contact sheet of the three outputs
    again = invoke("batch", "--report", outdir)
    assert again.exit_code == 1
    assert again.stdout.startswith(summary_table(BatchRecord.read(outdir).scans))
    from PIL import Image

    with Image.open(outdir / "contact-sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 3 * 400  # four cells in a row


def test_a_scan_failing_midway_is_recorded_and_its_output_marked_failed(scans, tmp_path):
    import tifffile

    broken = tilex.synth(tmp_path / "broken", size=(128, 128), bands=3, seed=3, tile=32).parent
    band = broken / json.loads((broken / "scan.json").read_text())["bands"][0]["file"]
    with tifffile.TiffFile(band) as tiff:  # the last tile's bytes (the first is read at open)
        start, size = tiff.pages[0].dataoffsets[-1], tiff.pages[0].databytecounts[-1]
    with open(band, "r+b") as f:
        f.seek(start)
        f.write(bytes(size))
    outdir = tmp_path / "campaign"
    # uncalibrated: the first read is the statistics pass, after the output is laid out
    report = tilex.batch([broken, scans["front"]], outdir, calibrate="none", **OPTIONS)
    assert not report.ok
    assert [(s.name, s.state) for s in report.scans] == [("broken", "failed"), ("front", "done")]
    assert report.failed[0].error
    assert manifest(outdir / "broken")["state"] == "failed"


# --------------------------------------------------------------------------- nothing redone


def test_a_killed_batch_resumes_to_a_clean_batchs_bytes(scans, tmp_path, chunk_hashes):
    sources = [scans["front"], scans["panel"], scans["back"]]
    clean = tmp_path / "clean"
    assert tilex.batch(sources, clean, **LAYOUT).ok

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "tilex.cli", "-q", "batch", *map(str, sources), "-o",
               str(killed), *CLI_OPTIONS, "--unit", "64", "--chunk", "32"]  # fmt: skip
    # front has 4 level-0 units: the 6th is the second of panel's
    env = dict(os.environ, **{FAILPOINT_ENV: "unit:6"})
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr
    # the record survived the kill and says where it stopped
    assert states(killed) == {"front": "done", "panel": "running", "back": "pending"}
    assert manifest(killed / "panel")["state"] == "running"

    env.pop(FAILPOINT_ENV)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert states(killed) == {"front": "skipped", "panel": "resumed", "back": "done"}
    for name in ("front", "panel", "back"):
        assert chunk_hashes(killed / name) == chunk_hashes(clean / name), name


def test_the_next_scans_model_is_fitted_while_one_runs_and_changes_no_byte(
    scans, tmp_path, chunk_hashes, monkeypatch
):
    import threading

    import tilex.calibration

    fitted_on = []
    fit_scan = tilex.calibration.fit_scan

    def watched(scan, *args, **kwargs):
        fitted_on.append((tuple(scan.shape), threading.current_thread().name))
        return fit_scan(scan, *args, **kwargs)

    sources = [scans["front"], scans["panel"], scans["back"]]
    tilex.run(scans["back"], tmp_path / "campaign" / "back", **OPTIONS)  # complete: not refitted
    monkeypatch.setattr(tilex.calibration, "fit_scan", watched)
    assert tilex.batch(sources, tmp_path / "campaign", **OPTIONS).ok
    # front's own run fits its model; panel's is fitted on the thread ahead while front runs
    assert sorted(fitted_on) == [((96, 128), "MainThread"), ((128, 128), "tilex-ahead")]
    for name in ("front", "panel"):
        alone = tmp_path / "alone" / name
        tilex.run(scans[name], alone, **OPTIONS)
        batched = tmp_path / "campaign" / name
        assert chunk_hashes(batched) == chunk_hashes(alone), name
        assert manifest(batched)["calibration"] == manifest(alone)["calibration"], name


def test_a_changed_option_is_reported_for_each_scan_not_recomputed(scans, tmp_path):
    outdir = tmp_path / "campaign"
    assert tilex.batch([scans["detail"]], outdir, **OPTIONS).ok
    before = (outdir / "detail" / "tilex.json").read_bytes()
    report = tilex.batch([scans["detail"]], outdir, threshold=0.6, **OPTIONS)
    (record,) = report.scans
    assert record.state == "failed"
    assert "cannot resume" in record.error and "parameters.threshold" in record.error
    assert (outdir / "detail" / "tilex.json").read_bytes() == before


# --------------------------------------------------------------------------- job files


def test_a_job_files_options_reach_each_run(scans, tmp_path, random_network):
    (tmp_path / "jobs").mkdir()
    weights = tilex.save_weights(random_network(3), tmp_path / "jobs" / "w.safetensors")
    jobs = tmp_path / "jobs" / "jobs.csv"
    rel = os.path.relpath(scans["front"], jobs.parent)
    jobs.write_text(
        "scan,name,threshold,weights,norm,keep-dissimilarity\n"
        f"{rel},recto,0.7,,,\n"
        f"{os.path.relpath(scans['back'], jobs.parent)},,,w.safetensors,pixel,yes\n"
    )
    lines = tmp_path / "more.jsonl"
    lines.write_text(
        json.dumps({"scan": str(scans["panel"]), "clip": [2, 98], "norm": "band"}) + "\n\n"
    )
    outdir = tmp_path / "campaign"
    result = invoke("-q", "batch", jobs, lines, "-o", outdir, *CLI_OPTIONS, "--threshold", "0.55")
    assert result.exit_code == 0, result.output

    recto, back, panel = (manifest(outdir / n) for n in ("recto", "back", "panel"))
    assert recto["parameters"]["threshold"] == 0.7  # the row's, over the batch's
    assert back["parameters"]["threshold"] == panel["parameters"]["threshold"] == 0.55
    assert back["parameters"]["norm"] == "pixel" and back["parameters"]["keep_dissimilarity"]
    assert back["weights"]["path"] == str(weights)
    assert back["weights"]["sha256"] != recto["weights"]["sha256"]
    assert panel["parameters"]["clip"] == [2.0, 98.0] and panel["parameters"]["norm"] == "band"
    recorded = {s.name: s.options for s in BatchRecord.read(outdir).scans}
    assert recorded["recto"] == {"threshold": 0.7}
    assert recorded["back"] == {
        "keep_dissimilarity": True,
        "norm": "pixel",
        "weights": str(weights),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scan,thresh\nfront,0.5\n", "row 2: unknown column 'thresh'"),
        ("scan,threshold\nfront,high\n", "row 2: threshold must be a number"),
        ("scan,threshold\nfront,1.5\n", r"row 2: --threshold must be a number in \[0, 1\]"),
        ("scan,name\nfront,../up\n", "row 2: name '../up' cannot name a folder"),
        ("scan,name\nfront,x\nback,X\n", "row 3: name 'X' is already given by jobs.csv row 2"),
        ("name\nx\n", "row 2: no scan"),
        ("scan\n", "lists no scan"),
    ],
)
def test_a_bad_job_file_is_one_line_and_runs_nothing(scans, tmp_path, text, message):
    jobs = tmp_path / "jobs.csv"
    for name in ("front", "back"):
        shutil.copytree(scans[name], tmp_path / name)
    jobs.write_text(text)
    outdir = tmp_path / "campaign"
    with pytest.raises((JobFileError, PlanError), match=message):
        tilex.batch([jobs], outdir, **OPTIONS)
    result = invoke("batch", jobs, "-o", outdir, *CLI_OPTIONS)
    assert result.exit_code == 2
    assert result.stderr.startswith("tilex: error: ") and len(result.stderr.splitlines()) == 1
    assert not outdir.exists()


# --------------------------------------------------------------------------- names


def test_names_come_from_folders_and_collide_the_same_way_in_any_order():
    a, b, c = Path("/x/panel"), Path("/y/panel"), Path("/z/Panel/scan.json")
    one = [j.name for j in name_jobs([JobSpec(a), JobSpec(b), JobSpec(c)])]
    two = [j.name for j in name_jobs([JobSpec(c), JobSpec(b), JobSpec(a)])]
    assert one == ["panel", "panel-2", "Panel-3"]
    assert dict(zip([a, b, c], one, strict=True)) == dict(zip([c, b, a], two, strict=True))
    assert base_name(Path("/d/verso.ome.tiff")) == "verso"
    assert base_name(Path("/d/contact-sheet.png/scan.json")) == "contact-sheet.png_"


def test_names_given_before_are_kept_and_taken():
    a, b = JobSpec(Path("/x/panel")), JobSpec(Path("/y/panel"))
    recorded = {b.key: "panel"}  # an earlier batch named /y/panel first
    assert [j.name for j in name_jobs([a, b], recorded)] == ["panel-2", "panel"]
    # the same scan with other options is another job, with its own name
    c = JobSpec(Path("/y/panel"), (("threshold", 0.7),))
    assert [j.name for j in name_jobs([b, c], recorded)] == ["panel", "panel-2"]
    with pytest.raises(JobFileError, match="listed twice"):
        name_jobs([a, JobSpec(Path("/x/panel"))])
    with pytest.raises(JobFileError, match="already given by OUTDIR/batch.json"):
        name_jobs([JobSpec(Path("/x/panel"), name="panel", origin="jobs.csv row 2")], recorded)


def test_names_are_stable_across_runs_of_one_campaign(scans, tmp_path):
    twin = tmp_path / "other" / "front"
    shutil.copytree(scans["front"], twin)
    outdir = tmp_path / "campaign"
    first = tilex.batch([twin], outdir, **OPTIONS)
    assert [s.name for s in first.scans] == ["front"]
    # listed again with a newcomer of the same folder name, in another order: front keeps its name
    second = tilex.batch([scans["front"], twin], outdir, **OPTIONS)
    assert [(s.name, s.state) for s in second.scans] == [("front-2", "done"), ("front", "skipped")]
    assert sources_of(outdir) == {"front": str(twin), "front-2": str(scans["front"])}
    # a batch of only the newcomer keeps the record of the other scan
    tilex.batch([scans["front"]], outdir, **OPTIONS)
    assert sources_of(outdir) == {"front": str(twin), "front-2": str(scans["front"])}


def sources_of(outdir: Path) -> dict[str, str]:
    return {s.name: s.source for s in BatchRecord.read(outdir).scans}


def test_sources_read_scans_and_job_files_in_order(scans, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"scan": str(scans["back"]), "input_range": "0,65535"}) + "\n")
    specs = read_sources([scans["front"], jobs])
    assert [s.source for s in specs] == [scans["front"].resolve(), scans["back"].resolve()]
    assert dict(specs[1].options) == {"input_range": (0.0, 65535.0)}
    # a folder and its scan.json are one scan: listed both ways, it is listed twice
    (again,) = read_sources([scans["front"] / "scan.json"])
    assert again.key == specs[0].key
    with pytest.raises(JobFileError, match="listed twice"):
        name_jobs([specs[0], again])
    # a shipped network's name stays a name; a file is found beside the job file
    named = tmp_path / "named.csv"
    named.write_text(f"scan,weights\n{scans['front']},designed\n{scans['back']},w.safetensors\n")
    designed, file = read_sources([named])
    assert dict(designed.options) == {"weights": "designed"}
    assert dict(file.options) == {"weights": (tmp_path / "w.safetensors").resolve()}


# --------------------------------------------------------------------------- the batch itself


def test_progress_covers_the_whole_batch(scans, tmp_path):
    outdir = tmp_path / "campaign"
    tilex.run(scans["detail"], outdir / "detail", **OPTIONS)
    seen = []
    tilex.batch([scans["front"], scans["detail"], scans["back"]], outdir, progress=seen.append,
                **OPTIONS)  # fmt: skip
    last = seen[-1]
    # the complete scan is no work: the pixels are those of the two others
    assert (last.scans_done, last.scans_total) == (3, 3)
    assert last.pixels_done == last.pixels_total == 96 * 128 * 2
    assert all(a.pixels_done <= b.pixels_done for a, b in zip(seen, seen[1:], strict=False))
    assert {s.stage for s in seen if s.scan == "front"} >= {"stats", "tiles"}
    # the command's bars draw the same statuses
    with batch_bars(enabled=True) as draw:
        for status in seen:
            draw(status)


def test_a_second_batch_on_the_same_outdir_is_refused(scans, tmp_path):
    outdir = tmp_path / "campaign"
    with output_lock(outdir), pytest.raises(OutputBusyError, match="being written by process"):
        tilex.batch([scans["front"]], outdir, **OPTIONS)


def test_resume_and_overwrite_are_not_options_of_a_batch(scans, tmp_path):
    with pytest.raises(PlanError, match="continues every output"):
        tilex.batch([scans["front"]], tmp_path / "c", overwrite=True, **OPTIONS)


def test_the_command_checks_its_arguments(tmp_path):
    for args in (["batch"], ["batch", tmp_path], ["batch", "--report", tmp_path, tmp_path],
                 ["batch", tmp_path, "-o", tmp_path / "o", "--sheet", tmp_path / "s.png"]):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == 2 and result.stderr.startswith("tilex: error: "), args
    result = invoke("batch", "--report", tmp_path)
    assert result.exit_code == 2 and "no batch record" in result.stderr


def test_a_record_from_another_program_is_not_taken_for_ours(scans, tmp_path):
    outdir = tmp_path / "campaign"
    outdir.mkdir()
    (outdir / "batch.json").write_text('{"jobs": []}')
    with pytest.raises(OutputError, match="is not a tilex batch record"):
        tilex.batch([scans["front"]], outdir, **OPTIONS)
    with pytest.raises(ValueError, match="scan state must be one of"):
        ScanRecord("a", "a", "a", state="finished")


# --------------------------------------------------------------------------- on a cluster


def float_copy(scan: Path, dest: Path) -> Path:
    """``scan`` with its bands as float32 images of the values 0..65535 (they need an input range)."""
    import numpy as np
    import tifffile

    shutil.copytree(scan, dest)
    for band in json.loads((dest / "scan.json").read_text())["bands"]:
        path = dest / band["file"]
        tifffile.imwrite(path, tifffile.imread(path).astype(np.float32))
    return dest


def test_workers_give_the_same_bytes_as_one_process(scans, tmp_path, chunk_hashes):
    pytest.importorskip("distributed")
    # with 64 px units, detail (80x80) is 2x2 units: it runs across the workers; tiny
    # (48x64) fits in one: it runs whole on one worker, as does a scan with an input range
    tiny = tilex.synth(tmp_path / "tiny", size=(48, 64), bands=3, seed=9).parent
    floats = float_copy(scans["front"], tmp_path / "floats")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"scan": str(floats), "input_range": "0,65535"}) + "\n")
    sources = [tiny, scans["detail"], jobs]
    local = tilex.batch(sources, tmp_path / "local", **LAYOUT)
    spread = tilex.batch(sources, tmp_path / "spread", workers=2, **LAYOUT)
    assert local.ok and spread.ok, spread.table()
    assert [s.name for s in spread.scans] == ["tiny", "detail", "floats"]
    for name in ("tiny", "detail", "floats"):
        assert chunk_hashes(tmp_path / "spread" / name) == chunk_hashes(tmp_path / "local" / name)
    assert manifest(tmp_path / "spread" / "detail")["cluster"]["workers"] == 2  # units spread
    for name in ("tiny", "floats"):  # whole, on one worker
        assert not manifest(tmp_path / "spread" / name).get("cluster")


def test_the_readme_job_file_reads_as_it_says(tmp_path):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (text,) = re.findall(r"```text\n(scan,name.*?)```", readme, flags=re.S)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(text)
    recto, verso = name_jobs(read_sources([jobs]))
    assert (recto.name, recto.source, recto.run_options) == (
        "p07-recto",
        tmp_path / "panels" / "p07",
        {"threshold": 0.6},
    )
    assert (verso.name, verso.run_options) == (
        "p07-verso",
        {"weights": tmp_path / "weights" / "verso.safetensors"},
    )
