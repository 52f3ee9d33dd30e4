"""Golden outputs: every array chunk of `tilex run` keeps the bytes it had before the redesign.

``golden_hashes.json`` beside this file holds, for each case, the sha256 of
every decoded chunk of every level of every image, recorded by running this
file as a script::

    python tests/test_golden.py --record

First recorded at commit 6b9dc85 (before the redesign of issue 12), which
every later change kept byte for byte, the images added since (evidence,
visible) aside. Recorded again, all images, when the encoder began to drop
the designed weights' dead channels (:func:`tilex.encoder.network.prune_channels`,
12x faster here): in ``channels_last`` oneDNN rounds the narrow layers'
sums differently, so in the ``band`` case the visible features moved by
one float32 step at some pixels: the ``score`` and ``dissimilarity``
chunks by at most 4.6e-6, 3 overlay values of 276,480 by one level, while
every ``collage`` and ``winner`` chunk and the whole ``pixel`` case kept
their bytes. Since the trained weights became the default, every case names
the designed weights (``weights="designed"``), which keep these bytes.

The bytes are those of one platform: the CPU build of torch picks its
convolution kernels by the instruction set it finds, and oneDNN's AVX-512
kernels round the narrow layers' sums otherwise than its AVX2 ones (on an
Intel Xeon with AVX-512, 119 float chunks of the ``band`` case, ``score``,
``dissimilarity`` and ``evidence``, moved by float32 steps and 2 ``overlay``
chunks by one level; every ``collage`` and ``winner`` chunk and the whole
``pixel`` case kept their bytes). So the file holds one record per
:func:`platform`: ``AVX2 torch 2.13.0`` is the record above, made on the
project's AMD EPYC VMs; ``AVX512 torch 2.13.0`` was recorded on 2026-11-30
from the code of commit 6b1b235 (which gives the AVX2 record's bytes on
those VMs) on an Intel Xeon with AVX-512.
On a platform without a record the byte comparisons skip and say so; a
resumed run and a cluster run must still give the uninterrupted run's bytes.

Cases: whole-scan band statistics (keeping the per-band maps), pixel
normalisation, feathered tiles; a run SIGKILLed midway and resumed, and a run
on a 2-worker LocalCluster, must both give the band case's bytes. Chunks are
hashed decoded, so the test pins the arrays, not the compressor's version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import tilex
from tilex.omezarr import chunk_digests

GOLDEN = Path(__file__).with_name("golden_hashes.json")
SHAPE = (320, 288)  # 3 x 3 level-0 units of 128 px, 4 pyramid levels
LAYOUT = {"tile": 128, "unit": 128, "chunk": 64}
# the fusion and the weights the golden bytes were made with (the designed weights were the
# default until the trained ones shipped)
ARTEXTRACT = {"calibrate": "none", "norm": "band", "weights": "designed"}
CASES = {
    "band": {**ARTEXTRACT, "keep_normalised": True},
    "pixel": {"calibrate": "none", "norm": "pixel", "weights": "designed"},
    "feather": {**ARTEXTRACT, "blend": "feather", "overlap": 16},
}


def platform() -> str:
    """What the golden bytes depend on beyond the code: the instruction set torch's CPU
    kernels use and torch's version."""
    return f"{torch.backends.cpu.get_cpu_capability()} torch {torch.__version__.split('+')[0]}"


def make_scan(folder: Path) -> Path:
    return tilex.synth(folder / "scan", size=SHAPE, bands=3, seed=11)


def run_case(scan: Path, out: Path, case: str, **extra) -> Path:
    tilex.run(scan, out, device="cpu", **LAYOUT, **CASES[case], **extra)
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, str]]:
    records = json.loads(GOLDEN.read_text())
    if platform() not in records:
        pytest.skip(
            f"no golden bytes recorded for {platform()} (recorded: {', '.join(sorted(records))});"
            " `python tests/test_golden.py --record` adds them"
        )
    return records[platform()]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return make_scan(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def band(scan, tmp_path_factory) -> dict[str, str]:
    """The chunk hashes of an uninterrupted run of the band case on this machine."""
    return chunk_digests(run_case(scan, tmp_path_factory.mktemp("band") / "OUT", "band"))


def assert_golden(found: dict[str, str], expected: dict[str, str], case: str) -> None:
    assert sorted(found) == sorted(expected), f"{case}: other chunks than the golden run"
    changed = [key for key in expected if found[key] != expected[key]]
    assert not changed, f"{case}: {len(changed)} chunks changed, first {changed[:5]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_keep_their_golden_bytes(scan, golden, band, tmp_path, case, chunk_hashes):
    found = band if case == "band" else chunk_hashes(run_case(scan, tmp_path / "OUT", case))
    assert_golden(found, golden[case], case)


def test_a_killed_and_resumed_run_gives_the_uninterrupted_bytes(
    scan, band, tmp_path, chunk_hashes, killed_then_resumed
):
    out = tmp_path / "OUT"
    options = ["--device", "cpu", "--tile", "128", "--unit", "128", "--chunk", "64"]
    options += ["--keep-dissimilarity", "--calibrate", "none", "--norm", "band"]
    options += ["--weights", "designed"]
    killed_then_resumed(scan, out, options)
    assert_golden(chunk_hashes(out), band, "resumed")


def test_a_two_worker_cluster_gives_the_uninterrupted_bytes(scan, band, tmp_path, chunk_hashes):
    pytest.importorskip("distributed")
    out = run_case(scan, tmp_path / "OUT", "band", workers=2)
    assert_golden(chunk_hashes(out), band, "cluster")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        scan_path = make_scan(Path(tmp))
        record = {
            case: chunk_digests(run_case(scan_path, Path(tmp) / case, case)) for case in CASES
        }
    records = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    records[platform()] = record
    GOLDEN.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: {sum(map(len, record.values()))} chunk hashes for {platform()}")
