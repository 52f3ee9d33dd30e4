#!/usr/bin/env bash
# The whole GPU check of issue 17 in one script, for the GPU machine (../shared/tools/GPU.md):
# CPython 3.12, torch + CuPy present, no registry access, no zarr/dask/imagecodecs.
#
# Beforehand, on a machine with registry access, from the project root:
#     ../shared/tools/device-wheels monai setuptools wheel    # ./.whl, about 41 MB
# Then, on the GPU machine, from a copy of the project with .whl/ (under 64 MB in all):
#     bash benchmarks/gpu_check.sh     # logs + results into $OUT when set (8 files at most)
#
# Steps, each under `timeout` and a global deadline (GPU_CHECK_BUDGET s, default 440);
# a failing step is reported and the script goes on:
#   install   wheels into .devsite (PYTHONPATH); tilex editable, else a link farm
#   pytest    pytest -m gpu tests (kernel parity vs the oracle; CUDA engine == CPU engine)
#   cli       tilex synth 2048x2048x8, tilex run --device cuda, tilex validate
#   kernels   bench_kernels.py --no-cpu: fused CuPy kernel vs torch ops vs D2D copy
#   encoder   bench_encoder.py --no-cpu: 2048^2 tile, precision x memory format, eager,
#             bands in one pass, torch.compile (max-autotune-no-cudagraphs) fp16/bf16 cl
#   pipeline  bench_pipeline.py --device cuda: 8192^2 x 8 bands compressed TIFF ->
#             OME-Zarr: encoder ceiling on the engine's tiles, stages alone, end to end,
#             per-stage probes, MONAI and dask peers
#   precision bench_precision.py --device cuda --size 4096 (if time is left)
# and prints the short summary LAST (also $OUT/summary.txt).
#
# GPU_CHECK_FAKE=1: the same steps on CPU at toy sizes (checks the script and the
# Python paths here; nothing is installed).
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
FAKE=${GPU_CHECK_FAKE:-0}
BUDGET=${GPU_CHECK_BUDGET:-440}
DEADLINE=$((SECONDS + BUDGET))
RESULTS=${OUT:-$(mktemp -d /tmp/tilex-gpu-check.XXXXXX)}
LOGS=$RESULTS/logs
mkdir -p "$LOGS"
WORK=$(mktemp -d /tmp/tilex-gpu-work.XXXXXX)
STEPS=()
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TILEX_CACHE_DIR=$WORK/cache

if [ "$FAKE" = "1" ]; then
  DEV=cpu CLI_SIZE=256x256 BIG=512x512 TILE=256 KSIZE=256 ETILE=128 PSIZE=256 COMPILE=""
else
  DEV=cuda CLI_SIZE=2048x2048 BIG=8192x8192 TILE=2048 KSIZE=2048 ETILE=2048 PSIZE=4096
  COMPILE=${GPU_CHECK_COMPILE:-fp16:cl}   # each compiled variant costs about 25-40 s
fi

remaining() { echo $((DEADLINE - SECONDS)); }

# step NAME LIMIT_S CMD...: CMD's output into $LOGS/NAME.log, bounded by LIMIT_S and
# by what is left of the deadline; records rc and duration.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$(($(remaining) - 12))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    STEPS+=("$name|skip|0|no time left")
    echo "== $name: skipped (no time left)"
    return
  fi
  local what="$*"
  what=${what%%$'\n'*}
  echo "== $name (limit ${limit} s, $(($(date +%s) - T0)) s in): ${what:0:150}"
  local t0=$SECONDS rc note=""
  timeout --kill-after=5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && note="timed out"
  STEPS+=("$name|$rc|$((SECONDS - t0))|$note")
  tail -n 3 "$LOGS/$name.log" | cut -c1-200 | sed 's/^/   /'
  echo "   rc=$rc in $((SECONDS - t0)) s"
}
T0=$(date +%s)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  fake=$FAKE  commit: $(git rev-parse --short HEAD 2>/dev/null)"
  echo "python: $($PY --version 2>&1) at $(command -v "$PY")"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit \
    --format=csv,noheader 2>&1 || true
  echo "cores: $(nproc); mem: $(free -g 2>/dev/null | awk '/Mem:/{print $2" GB"}'); disk: $(df -h /tmp | awk 'NR==2{print $4" free"}')"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1
  "$PY" -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -1
  "$PY" -c "import setuptools; print('setuptools', setuptools.__version__)" 2>&1 | tail -1
} >"$LOGS/machine.log" 2>&1
cat "$LOGS/machine.log"

# -- install, offline -------------------------------------------------------------
# .devsite holds the wheels (setuptools 77+ among them: tilex's build backend needs
# it); then tilex editable. If that fails, a link farm $WORK/src/tilex (tilex/ with
# kernels/ and cli/ linked in as tilex.kernels and tilex.cli) on PYTHONPATH and a
# `tilex` launcher on PATH.
export PYTHONPATH="$ROOT/.devsite${PYTHONPATH:+:$PYTHONPATH}"
install() {
  if [ "$FAKE" = "1" ]; then echo "fake: nothing installed"; return 0; fi
  PATH="$(dirname "$(command -v "$PY")"):$PATH"
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .devsite .whl/*.whl || echo "INSTALL: wheels failed"
  else
    echo "INSTALL: no .whl/*.whl here (zarr, dask... missing)"
  fi
  if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile -e . \
     && (cd /tmp && "$PY" -c "import tilex.kernels, tilex.cli.main") && command -v tilex; then
    echo "INSTALL: editable"
    return 0
  fi
  echo "INSTALL: editable failed: link farm"
  mkdir -p "$WORK/src/tilex" "$WORK/bin"
  for f in "$ROOT"/tilex/*; do ln -sfn "$f" "$WORK/src/tilex/$(basename "$f")"; done
  ln -sfn "$ROOT/kernels" "$WORK/src/tilex/kernels"
  ln -sfn "$ROOT/cli" "$WORK/src/tilex/cli"
  printf '#!/bin/sh\nexec %s -m tilex.cli "$@"\n' "$(command -v "$PY")" >"$WORK/bin/tilex"
  chmod +x "$WORK/bin/tilex"
  echo "LINKFARM"
}
step install 90 bash -c "$(declare -f install); FAKE=$FAKE PY=$PY ROOT=$ROOT WORK=$WORK install"
if grep -q LINKFARM "$LOGS/install.log" 2>/dev/null; then
  export PYTHONPATH="$WORK/src:$PYTHONPATH" PATH="$WORK/bin:$PATH"
fi
if [ "$FAKE" != "1" ]; then
  # pip --target may put a script dir in .devsite/bin; the editable install's `tilex`
  # lands beside python3
  PATH="$(dirname "$(command -v "$PY")"):$ROOT/.devsite/bin:$PATH"
fi
(cd /tmp && "$PY" -c "import tilex, tilex.kernels, zarr, dask; print('tilex', tilex.__version__, tilex.__file__, 'zarr', zarr.__version__)") \
  >>"$LOGS/install.log" 2>&1
tail -n 1 "$LOGS/install.log"

# -- 1. correctness -------------------------------------------------------------
PYTEST_MARK=gpu
[ "$FAKE" = "1" ] && PYTEST_MARK="gpu or not gpu"
FAKE_TESTS=()
[ "$FAKE" = "1" ] && FAKE_TESTS=(-k "gpu_engine or cupy")
step pytest 150 "$PY" -m pytest -m "$PYTEST_MARK" tests -q -rfEsP -p no:cacheprovider \
  ${FAKE_TESTS[@]+"${FAKE_TESTS[@]}"}

# the project's pytest turns warnings into errors: if that run fails, the same
# selection again with warnings as warnings, to tell a warning from a wrong result
if ! grep -qE '^[0-9]+ passed' <(tail -n 1 "$LOGS/pytest.log") || grep -qE 'failed|error' <(tail -n 1 "$LOGS/pytest.log"); then
  step pytest_warn 90 "$PY" -m pytest -m "$PYTEST_MARK" tests -q -rfEsP -p no:cacheprovider \
    -W default ${FAKE_TESTS[@]+"${FAKE_TESTS[@]}"}
fi
step pytest_device 40 "$PY" -m pytest tests/test_device.py -q -rfEs -p no:cacheprovider

cli() {
  set -ex
  tilex synth "$WORK/cli-scan" --size "$CLI_SIZE" --bands 8 -q
  time tilex run "$WORK/cli-scan/scan.json" -o "$WORK/cli-out" --device "$DEV" --overwrite
  tilex validate "$WORK/cli-out"
  tilex info "$WORK/cli-scan/scan.json" | head -n 20 || true
  ls -la "$WORK/cli-out" && cat "$WORK/cli-out/tilex.json" | head -c 3000
}
step cli 75 bash -c "$(declare -f cli); WORK=$WORK CLI_SIZE=$CLI_SIZE DEV=$DEV cli"

# -- 2. speed ---------------------------------------------------------------------
step kernels 45 "$PY" benchmarks/bench_kernels.py --no-cpu --size "$KSIZE" --bands 8
[ "$FAKE" = "1" ] && step kernels_cpu 60 "$PY" benchmarks/bench_kernels.py --no-gpu --size 256 --repeat 2
ENC_ARGS=(--no-cpu)
[ "$FAKE" = "1" ] && ENC_ARGS=()
step encoder 110 "$PY" benchmarks/bench_encoder.py "${ENC_ARGS[@]}" --skip-auc --tile "$ETILE" \
  --bands 8 --repeats 10 --compile "$COMPILE" --deadline 75 --json "$RESULTS/encoder.json"

# the pipeline gets what is left but 35 s (precision and the summary after it)
PIPE_LIMIT=$(($(remaining) - 50))
[ "$PIPE_LIMIT" -gt 240 ] && PIPE_LIMIT=240
step pipeline "$PIPE_LIMIT" "$PY" benchmarks/bench_pipeline.py --device "$DEV" --size "$BIG" \
  --bands 8 --tile "$TILE" --out-dir "$WORK/pipe" --json "$RESULTS/pipeline.json" \
  --deadline $((PIPE_LIMIT - 40))
rm -rf "$WORK/pipe"
step precision 40 "$PY" benchmarks/bench_precision.py --device "$DEV" --size "$PSIZE"
nvidia-smi >"$LOGS/nvidia-smi.log" 2>&1 || true

# -- summary, last ------------------------------------------------------------------
summary() {
  echo "== gpu_check summary: total $SECONDS s (budget $BUDGET), fake=$FAKE; logs in gpu-logs.tgz"
  head -n 4 "$LOGS/machine.log"
  printf '%-10s %-5s %5s  %s\n' step rc secs note
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n rc t note <<<"$s"
    printf '%-10s %-5s %5s  %s\n' "$n" "$rc" "$t" "$note"
  done
  echo "-- install:"; grep -E '^(INSTALL|LINKFARM|tilex )' "$LOGS/install.log" | cut -c1-160
  echo "-- pytest:"
  grep -E '(passed|failed|error)' "$LOGS/pytest.log" | tail -n 1
  [ -f "$LOGS/pytest_warn.log" ] && { echo "pytest -W default:"; grep -E '(passed|failed|error)' "$LOGS/pytest_warn.log" | tail -n 1; }
  grep -E '(passed|failed|error)' "$LOGS/pytest_device.log" | tail -n 1
  grep -E '^(FAILED|ERROR)|winners differing|max \|diff\|' "$LOGS/pytest.log" | cut -c1-200 | head -n 15
  echo "-- cli:"
  grep -E 'Mpx/s|^real|validat|ok|FAIL|rror' "$LOGS/cli.log" | cut -c1-160 | head -n 12
  echo "-- kernels (fused vs torch vs copy):"
  grep -E 'copy:|fuse |histogram|GPU:|skipped' "$LOGS/kernels.log" | cut -c1-160
  echo "-- encoder, one ${ETILE}^2 tile, 9 planes:"
  grep -E '^(device|cuda|cpu|failed|skipped)' "$LOGS/encoder.log" | cut -c1-140
  echo "-- pipeline:"
  if [ -f "$RESULTS/pipeline.json" ]; then
    "$PY" - "$RESULTS/pipeline.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["rows"]
ref = next((r for r in rows if r["note"].startswith("reference")), None)
print(f"{d['size'][0]}x{d['size'][1]} x {d['bands']} bands, tile {d['tile']}, {d['precision']}, {d['device']}")
print(f"{'stage / variant':<52} {'Mpx/s':>8} {'vs ref':>6} {'GPU MB':>7}  note")
for r in rows:
    ratio = r["mpx_s"] / ref["mpx_s"] if ref else float("nan")
    gpu = r["gpu_mb"] if r["gpu_mb"] is not None else float("nan")
    print(f"{r['name'][:52]:<52} {r['mpx_s']:8.2f} {ratio:6.2f} {gpu:7.0f}  {r['note'][:70]}")
if d.get("e2e_stages"):
    print(f"{'probed stage':<8} {'busy s':>7} {'calls':>5} {'thr':>3} {'Mpx/s':>8} {'%wall':>5} {'GB/s':>6}")
    for s in d["e2e_stages"]:
        gb = f"{s['gb_s']:6.2f}" if s.get("gb_s") else "     -"
        print(f"{s['stage']:<8} {s['busy_s']:7.2f} {s['calls']:5d} {s['threads']:3d} "
              f"{s['mpx_s_busy']:8.1f} {100 * s['share_of_wall']:5.0f} {gb}")
for name, t in d.get("e2e_timings", {}).items():
    print(f"{name[:40]}: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items() if isinstance(v, (int, float))))
EOF
  else
    echo "no pipeline.json"
  fi
  grep -E '^(EFFICIENCY|slowest|best encoder|MONAI|dask|   MONAI|   dask|== section)' "$LOGS/pipeline.log" | cut -c1-180
  grep -E 'Error|Traceback' "$LOGS/pipeline.log" | head -n 5 | cut -c1-180
  echo "-- precision vs fp32:"
  grep -E '^ *(fp32|tf32|bf16|fp16) ' "$LOGS/precision.log" | cut -c1-120
}
summary >"$RESULTS/summary.txt" 2>&1
cp "$RESULTS/summary.txt" "$LOGS/"
tar czf "$RESULTS/gpu-logs.tgz" -C "$RESULTS" logs 2>/dev/null && rm -rf "$LOGS"
rm -rf "$WORK"
echo
cat "$RESULTS/summary.txt"
