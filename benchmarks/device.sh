#!/usr/bin/env bash
# The accelerator checks of issue 19, as ONE script for a short device lease.
#
#   bash benchmarks/device.sh            # writes everything under ${OUT:-/tmp/jnn-device}
#
# 1. install jnn with the GPU jax wheel and the benchmark peers (skipped when present);
# 2. python -m benchmarks --device --quick  (seed, mlp, cnn, sweep: jnn vs handwritten vs peers,
#    fit vs per-step loop) -> results.md / results.json, for the GPU table in benchmarks/README.md;
# 3. python benchmarks/bench_scaling.py --device (weak scaling over the GPUs present);
# 4. the test suite on the GPU (the accelerator-relevant files first, then the rest).
# Every step has its own timeout; they add up to ~8 min (run it with timeout_s=540), leaving
# room in a 15-min lease to rerun a failed step alone. CPU result files are not touched.
set -u
OUT=${OUT:-/tmp/jnn-device}
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/device.log"; }

log "install"
python -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')" 2>/dev/null || \
  timeout 120 pip install -q -e ".[bench,test]" "jax[cuda12]==0.10.2" \
    >>"$OUT/device.log" 2>&1
python -c "import jax; print(jax.devices())" | tee -a "$OUT/device.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/device.log"

log "benchmarks --device --quick"
timeout 150 python -m benchmarks --device --quick --out "$OUT/bench" --no-memory \
  >"$OUT/bench.log" 2>&1; echo "rc=$?" >>"$OUT/bench.log"

log "weak scaling"
timeout 40 python benchmarks/bench_scaling.py --device --rounds 3 >"$OUT/scaling.md" 2>&1

log "tests on the GPU"
timeout 70 python -m pytest -q -x -p no:cacheprovider -n 4 \
  tests/test_train.py tests/test_stream.py tests/test_distributed.py tests/test_checkpoint.py \
  tests/test_experiments.py >"$OUT/tests_core.log" 2>&1; echo "rc=$?" >>"$OUT/tests_core.log"
timeout 90 python -m pytest -q -p no:cacheprovider -n 8 tests \
  >"$OUT/tests_all.log" 2>&1; echo "rc=$?" >>"$OUT/tests_all.log"
log "done"
tail -n 3 "$OUT"/*.log
