"""``tilex.evaluate`` and ``tilex evaluate``: detection measured against a known mask.

One small synthetic scan is run once (chunk 32 px, so level 0 is streamed in
five chunk rows); every measure is checked against a hand computation on the
whole arrays in memory.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from tilex.cli.main import main

import tilex
from tilex.errors import OutputError, ScanError
from tilex.evaluate import Detection, DetectionCounts, evaluate_output, quantise
from tilex.metrics import average_precision, roc_auc
from tilex.omezarr import OmeZarrSink, open_output
from tilex.sink import RunInfo, TileResult

SHAPE = (160, 192)
CHUNK = 32


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A run on a synthetic scan, its level-0 arrays in memory and its truth mask."""
    tmp = tmp_path_factory.mktemp("evaluate")
    manifest = tilex.synth(tmp / "scan", size=SHAPE, bands=3, seed=3)
    # ArtExtract's fusion: it flags false positives and misses some, so every measure is informative
    tilex.run(
        manifest, tmp / "out", device="cpu", tile=64, unit=64, chunk=CHUNK,
        calibrate="none", norm="band",
    )  # fmt: skip
    out = open_output(tmp / "out")
    score = np.asarray(out["evidence"].levels[0][0])  # what the AUC ranks
    winner = np.asarray(out["winner"].levels[0][...])
    mask_path = tmp / "scan" / "hidden_mask.tif"
    hidden = tifffile.imread(mask_path) != 0
    return tmp / "out", mask_path, score, winner, hidden


def test_auc_equals_the_in_memory_auc(evaluated):
    out, mask, evidence, _, hidden = evaluated
    detection = evaluate_output(out, mask)
    assert 0.5 < detection.auc <= 1.0
    assert detection.auc == pytest.approx(roc_auc(evidence, hidden), abs=1e-3)
    # exact for the scores quantised to the histogram's bins
    assert detection.auc == pytest.approx(roc_auc(quantise(evidence), hidden), abs=1e-12)
    # the thresholded score ties every unflagged pixel at 0: the evidence ranks them too
    thresholded = np.asarray(open_output(out)["score"].levels[0][0])
    assert detection.auc > roc_auc(thresholded, hidden) + 0.005


def test_flagged_measures_equal_hand_counts(evaluated):
    out, mask, _, winner, hidden = evaluated
    detection = evaluate_output(out, mask)
    flagged = winner > 0
    tp, fp = np.sum(flagged & hidden), np.sum(flagged & ~hidden)
    fn, tn = np.sum(~flagged & hidden), np.sum(~flagged & ~hidden)
    assert 0 < tp and 0 < fp and 0 < fn  # every measure below is informative
    assert detection.counts == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert detection.pixels == SHAPE[0] * SHAPE[1]
    assert detection.hidden == hidden.sum()
    assert detection.flagged_fraction == flagged.mean()
    assert detection.precision == tp / (tp + fp)
    assert detection.recall == tp / (tp + fn)
    assert detection.f1 == 2 * tp / (2 * tp + fp + fn)
    assert detection.iou == np.sum(flagged & hidden) / np.sum(flagged | hidden)
    assert detection.threshold == open_output(out).manifest["parameters"]["threshold"]


def test_average_precision_equals_the_brute_force_one(evaluated):
    out, mask, score, _, hidden = evaluated
    ap = evaluate_output(out, mask).average_precision
    assert 0.0 <= ap <= 1.0
    assert ap == pytest.approx(average_precision(score, hidden), abs=1e-3)
    assert ap == pytest.approx(average_precision(quantise(score), hidden), abs=1e-12)


def test_streams_one_chunk_row_at_a_time(evaluated, monkeypatch):
    out, mask, _, _, _ = evaluated
    seen: list[tuple[int, ...]] = []
    of = DetectionCounts.of.__func__

    def spy(cls, score, flagged, hidden, *, bins):
        seen.append(score.shape)
        return of(cls, score, flagged, hidden, bins=bins)

    monkeypatch.setattr(DetectionCounts, "of", classmethod(spy))
    evaluate_output(out, mask)
    assert seen == [(CHUNK, SHAPE[1])] * (SHAPE[0] // CHUNK)


def test_counts_merge_to_the_counts_of_the_whole(evaluated):
    _, _, score, winner, hidden = evaluated
    whole = DetectionCounts.of(score, winner > 0, hidden, bins=256)
    top = DetectionCounts.of(score[:70], winner[:70] > 0, hidden[:70], bins=256)
    bottom = DetectionCounts.of(score[70:], winner[70:] > 0, hidden[70:], bins=256)
    for merged in (top.merge(bottom), bottom.merge(top)):
        np.testing.assert_array_equal(merged.positive, whole.positive)
        np.testing.assert_array_equal(merged.negative, whole.negative)
        assert (merged.tp, merged.fp, merged.fn, merged.tn) == (
            whole.tp, whole.fp, whole.fn, whole.tn
        )  # fmt: skip


def write_output(path, score: np.ndarray, winner: np.ndarray) -> None:
    """A tiny complete output holding the given level-0 score and winner."""
    h, w = score.shape
    sink = OmeZarrSink(path, unit=64, chunk=32)
    sink.open(
        RunInfo(
            shape=(h, w),
            band_names=("ir",),
            wavelengths=(1000.0,),
            channels=1,
            provenance={"parameters": {"threshold": 0.5}},
        )
    )
    sink.write(
        TileResult(
            (0, h, 0, w),
            winner,
            score,
            np.zeros((1, h, w), np.float32),
            np.zeros((3, h, w), np.uint8),
        )
    )
    sink.close()


def test_a_perfect_score_map_gives_auc_and_ap_one(tmp_path):
    hidden = np.zeros((40, 50), bool)
    hidden[5:20, 10:30] = True
    score = np.where(hidden, 0.9, 0.1).astype(np.float32)
    write_output(tmp_path / "out", score, hidden.astype(np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", hidden.astype(np.uint8))
    detection = evaluate_output(tmp_path / "out", tmp_path / "mask.tif")
    assert (detection.auc, detection.average_precision) == (1.0, 1.0)
    assert (detection.precision, detection.recall, detection.f1, detection.iou) == (1, 1, 1, 1)
    # swapped classes: the worst ranking
    tifffile.imwrite(tmp_path / "inverse.tif", (~hidden).astype(np.uint8))
    assert evaluate_output(tmp_path / "out", tmp_path / "inverse.tif").auc == 0.0


def test_empty_denominators_are_nan_and_none():
    score = np.zeros((4, 4), np.float32)
    counts = DetectionCounts.of(score, score > 0, np.zeros((4, 4), bool), bins=8)
    detection = Detection.from_counts(counts, shape=(4, 4))
    assert np.isnan(detection.auc) and np.isnan(detection.precision)
    record = detection.to_dict()
    assert record["auc"] is None and record["precision"] is None
    json.dumps(record, allow_nan=False)


def test_a_mask_of_another_size_is_refused(evaluated, tmp_path):
    out, _, _, _, _ = evaluated
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((100, 120), np.uint8))
    with pytest.raises(ScanError, match=r"small\.tif is 100x120 but the output .* is 160x192"):
        evaluate_output(out, tmp_path / "small.tif")


def test_an_incomplete_output_is_refused(evaluated, tmp_path):
    _, mask, _, _, _ = evaluated
    sink = OmeZarrSink(tmp_path / "out", unit=64, chunk=32)
    sink.open(RunInfo(shape=SHAPE, band_names=("ir",), wavelengths=(None,), channels=1))
    with pytest.raises(OutputError, match="incomplete"):
        evaluate_output(tmp_path / "out", mask)
    sink.abort()


def test_bins_are_checked():
    with pytest.raises(ValueError, match="bins must be an integer >= 2"):
        DetectionCounts.empty(1)


def test_cli_prints_the_table(evaluated):
    out, mask, _, _, _ = evaluated
    result = CliRunner().invoke(main, ["evaluate", str(out), "--truth", str(mask)])
    assert result.exit_code == 0, result.output
    detection = evaluate_output(out, mask)
    assert f"ROC AUC    {detection.auc:.4f}" in result.output
    assert f"F1         {detection.f1:.4f}" in result.output
    assert "threshold 0.5" in result.output


def test_cli_json(evaluated):
    out, mask, _, _, _ = evaluated
    result = CliRunner().invoke(main, ["evaluate", str(out), "--truth", str(mask), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == evaluate_output(out, mask).to_dict()


@pytest.mark.parametrize("case", ["missing mask", "missing output", "mis-sized mask"])
def test_cli_bad_input_is_one_line_and_exit_2(evaluated, tmp_path, case):
    out, mask, _, _, _ = evaluated
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((8, 8), np.uint8))
    args = {
        "missing mask": [str(out), "--truth", str(tmp_path / "nope.tif")],
        "missing output": [str(tmp_path / "nope"), "--truth", str(mask)],
        "mis-sized mask": [str(out), "--truth", str(tmp_path / "small.tif")],
    }[case]
    result = CliRunner().invoke(main, ["evaluate", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tilex: error: "), result.output
