#!/usr/bin/env bash
# A short GPU follow-up to gpu_check.sh (about 3 minutes on the H200): the CUDA == CPU
# engine tests, then where the wall time of an end-to-end GPU run goes.
#
#   install   the wheels in .whl/ into .devsite, tilex editable (as gpu_check.sh)
#   pytest    pytest -m gpu tests/test_gpu_engine.py (measured differences with -rP)
#   synth     tilex synth SIZE (default 4096x4096) x 8 bands
#   default   cProfile of `tilex -v run --device cuda` (calibrated, norm noise), each log
#             line stamped with the seconds since the run began
#   nocal     the same with --calibrate none
# cProfile sees the main thread only: the reader pool and the writer show there as waits.
# A run cut by its timeout still writes its profile (SIGTERM -> dump). The top entries
# by cumulative time (all; tilex's own files) and by own time are in $OUT/prof.txt, the logs in $OUT/*.log.
# GPU_PROFILE_FAKE=1: on CPU at 256x256, nothing installed (checks the script here).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
R=${OUT:-$(mktemp -d /tmp/tilex-gpu-profile.XXXXXX)}
W=$(mktemp -d /tmp/tilex-prof.XXXXXX)
FAKE=${GPU_PROFILE_FAKE:-0}
SIZE=${GPU_PROFILE_SIZE:-4096x4096} DEV=cuda
[ "$FAKE" = 1 ] && SIZE=256x256 DEV=cpu
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TILEX_CACHE_DIR=$W/cache
export PYTHONPATH="$ROOT/.devsite${PYTHONPATH:+:$PYTHONPATH}"
T0=$SECONDS
say() { echo "== $((SECONDS - T0)) s: $*"; }

if [ "$FAKE" != 1 ]; then
  PATH="$(dirname "$(command -v "$PY")"):$PATH"
  {
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target .devsite .whl/*.whl
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile -e .
    (cd /tmp && "$PY" -c "import tilex, tilex.kernels, tilex.cli.main, zarr; print('tilex', tilex.__file__)")
  } >"$R/install.log" 2>&1
  say "install rc=$? $(tail -n 1 "$R/install.log")"
fi

timeout "${GPU_PROFILE_PYTEST_S:-70}" "$PY" -m pytest -m gpu tests/test_gpu_engine.py -q -rfEsP \
  -p no:cacheprovider >"$R/pytest.log" 2>&1
say "pytest rc=$? $(tail -n 1 "$R/pytest.log")"
grep -E '^(FAILED|ERROR)|: (\|d diff|normalised max|winners differing|where winners|statistics)' \
  "$R/pytest.log" | cut -c1-220

timeout 30 "$PY" -m tilex.cli synth "$W/scan" --size "$SIZE" --bands 8 -q >"$R/synth.log" 2>&1
say "synth $SIZE rc=$?"

# profile NAME LIMIT_S RUN-ARGS...: cProfile of `python -m tilex.cli -v run ...` into $R/NAME.prof
profile() {
  local name=$1 limit=$2
  shift 2
  timeout --kill-after=5 "$limit" "$PY" - "$R/$name.prof" -v run "$W/scan/scan.json" \
    -o "$W/$name" --device "$DEV" --overwrite "$@" <<'EOF' 2>&1 |
import cProfile, logging, runpy, signal, sys, time
path = sys.argv[1]
sys.argv = ["tilex", *sys.argv[2:]]
logging.getLogger("numba").setLevel(logging.WARNING)  # its DEBUG would flood -v
prof = cProfile.Profile()
def stop(*_):
    raise KeyboardInterrupt("timeout")
signal.signal(signal.SIGTERM, stop)
t0 = time.perf_counter()
prof.enable()
try:
    runpy.run_module("tilex.cli", run_name="__main__", alter_sys=True)
finally:
    prof.disable()
    prof.dump_stats(path)
    print(f"profiled wall {time.perf_counter() - t0:.2f} s", file=sys.stderr)
EOF
    "$PY" -u -c "import sys, time
t = time.perf_counter()
for line in sys.stdin: print(f'{time.perf_counter() - t:7.2f} {line}', end='')" >"$R/$name.log"
  say "$name rc=${PIPESTATUS[0]}"
  grep -E '^ *[0-9.]+ (wrote|profiled wall|Traceback|[A-Za-z]*Error)' "$R/$name.log" | cut -c1-200
}
profile default "${GPU_PROFILE_RUN_S:-50}"
profile nocal "${GPU_PROFILE_RUN_S:-50}" --calibrate none

"$PY" - "$R" >"$R/prof.txt" 2>&1 <<'EOF'
import io, pathlib, pstats, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.prof")):
    for key, where, n in (("cumulative", "", 25), ("cumulative", "tilex", 25), ("tottime", "", 15)):
        s = io.StringIO()
        pstats.Stats(str(path), stream=s).sort_stats(key).print_stats(where, n)
        text = s.getvalue()
        print(f"==== {path.name}: top {n} by {key}" + (f" in files matching {where!r}" if where else ""))
        print(text[text.find("   ncalls"):].rstrip())
EOF
say "done"
cat "$R/prof.txt" | cut -c1-160
rm -rf "$W"
