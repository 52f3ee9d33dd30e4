#!/usr/bin/env bash
# The whole GPU check in one script, for the GPU machine (see ../shared/tools/GPU.md):
# CPython 3.12, torch + CuPy present, no registry access, no zarr/dask/imagecodecs.
#
# Beforehand, on a machine with registry access, from the project root:
#     ../shared/tools/device-wheels            # ./.whl, about 40 MB (add `monai` for the MONAI peer)
# Then copy the project with .whl/ (keep the copy under 64 MB) and run from its root:
#     bash benchmarks/gpu_check.sh            # full logs into $OUT when set
#
# Steps (each under `timeout`, all within about 6 minutes; a failing step is
# reported and the script goes on):
#   install  offline wheels into .devsite, then tilex itself (editable)
#   pytest   pytest -m gpu -q
#   pipeline benchmarks/bench_pipeline.py --device cuda (GPU-sized: 8192x8192, tile 2048)
#   kernels  benchmarks/bench_kernels.py     (when present)
#   precision benchmarks/bench_precision.py (tf32/bf16/fp16 agreement with fp32)
#   encoder  benchmarks/bench_encoder.py     (when present)
# and prints the short table LAST. GPU_CHECK_COMPILE=1 adds the torch.compile
# variants to the pipeline benchmark (about a minute more).
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
LOGS=${OUT:-}
if [ -z "$LOGS" ]; then
  LOGS=$(mktemp -d /tmp/tilex-gpu-check.XXXXXX)
fi
mkdir -p "$LOGS"
WORK=$(mktemp -d /tmp/tilex-gpu-work.XXXXXX)
DEADLINE=$((SECONDS + 345))   # the whole script, table included, under 6 minutes
STEPS=()

remaining() { echo $((DEADLINE - SECONDS)); }

# step NAME LIMIT_S CMD...: run CMD with its output in $LOGS/NAME.log, bounded by
# LIMIT_S and by what is left of the deadline; record rc and duration.
step() {
  local name=$1 limit=$2
  shift 2
  local left
  left=$(( $(remaining) - 15 ))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -le 5 ]; then
    STEPS+=("$name|skipped|0|no time left")
    echo "== $name: skipped (no time left)"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  local note=""
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note="timed out"
  STEPS+=("$name|$rc|$((SECONDS - t0))|$note")
  tail -n 4 "$LOGS/$name.log" | sed 's/^/   /'
  echo "   rc=$rc in $((SECONDS - t0)) s; log $LOGS/$name.log"
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "python: $($PY --version 2>&1)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  nproc
} >"$LOGS/machine.log" 2>&1
cat "$LOGS/machine.log"

# -- install, offline -------------------------------------------------------
install() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .devsite .whl/*.whl || return 1
  else
    echo "no .whl/*.whl here: run ../shared/tools/device-wheels before copying (zarr, dask... missing)"
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
}
export PYTHONPATH="$ROOT/.devsite${PYTHONPATH:+:$PYTHONPATH}"
export -f install
export PY
step install 60 bash -c install

# -- tests --------------------------------------------------------------------
step pytest 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider

# -- benchmarks (the pipeline first: it is the one this check is for) -------------
EXTRA=()
[ "${GPU_CHECK_COMPILE:-0}" = "1" ] && EXTRA+=(--compile)
step pipeline 150 "$PY" benchmarks/bench_pipeline.py --device cuda --size 8192x8192 --bands 8 \
  --out-dir "$WORK" --json "$LOGS/pipeline.json" ${EXTRA[@]+"${EXTRA[@]}"}
rm -rf "$WORK"
if [ -f benchmarks/bench_kernels.py ]; then
  step kernels 45 "$PY" benchmarks/bench_kernels.py
else
  STEPS+=("kernels|absent|0|benchmarks/bench_kernels.py not in this copy")
fi
step precision 45 "$PY" benchmarks/bench_precision.py --device cuda --size 4096
if [ -f benchmarks/bench_encoder.py ]; then
  step encoder 45 "$PY" benchmarks/bench_encoder.py
else
  STEPS+=("encoder|absent|0|benchmarks/bench_encoder.py not in this copy")
fi

# -- the short table, last ----------------------------------------------------------
echo
echo "== gpu_check summary (logs in $LOGS; total $SECONDS s)"
printf '%-9s %-8s %6s  %s\n' step rc seconds note
for s in "${STEPS[@]}"; do
  IFS='|' read -r n rc t note <<<"$s"
  printf '%-9s %-8s %6s  %s\n' "$n" "$rc" "$t" "$note"
done
if [ -f "$LOGS/pipeline.log" ]; then
  # the lines of bench_pipeline's verdicts (efficiency, slowest stage, peers)
  grep -E '^(EFFICIENCY|slowest|best encoder|MONAI|dask)' "$LOGS/pipeline.log" || true
fi
if [ -f "$LOGS/pipeline.json" ]; then
  "$PY" - "$LOGS/pipeline.json" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
rows = data["rows"]
ref = next((r for r in rows if r["note"].startswith("reference")), None)
print(f"\npipeline on {data['device']}: {data['size'][0]}x{data['size'][1]}, {data['bands']} bands, "
      f"tile {data['tile']}, {data['precision']}")
print(f"{'stage / variant':<50} {'Mpx/s':>9} {'vs enc':>7} {'RSS MB':>7} {'GPU MB':>7}")
for r in rows:
    ratio = r["mpx_s"] / ref["mpx_s"] if ref else float("nan")
    gpu = r["gpu_mb"] if r["gpu_mb"] is not None else float("nan")
    rss = r["rss_mb"] if r["rss_mb"] is not None else float("nan")
    print(f"{r['name'][:50]:<50} {r['mpx_s']:9.2f} {ratio:7.2f} {rss:7.0f} {gpu:7.0f}")
EOF
else
  echo "bench_pipeline wrote no table (see $LOGS/pipeline.log)"
fi
