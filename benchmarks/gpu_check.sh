#!/usr/bin/env bash
# The checks that need a GPU, in one command of under 8 minutes, each stage under a time limit
# and teed into OUT (a stage that hangs loses nothing already written):
#   1. the CUDA tests: the cells against cuDNN (FP32 and at every --precision), `rnnbench speed`
#      and training runs on CUDA (OUT/pytest.log);
#   2. the precision table: `rnnbench speed --device cuda` of the fused and hand-written cells at
#      the fastrnns shape at --precision 32, tf32 and bf16-mixed (OUT/speed-<precision>.log);
#   3. the compiled cells (CUDA graphs, in pieces of 25 steps) against cuDNN at equal precision (32)
#      at the fastrnns shape, first call included; target <= 1.5x, first call <= 60 s (OUT/speed-compiled.log);
#   4. the harness against a bare loop on the GPU, after a warm-up fit of each (OUT/harness.log);
#   5. packing: six mnist-row quick runs one at a time, then six at once on the one GPU
#      (--parallel 6), wall time of each command (OUT/packing.log);
#   6. the first steps of the pixel-MNIST `paper` protocol for lstm_fused, gru_fused and
#      rnn_fused, 18 s each (OUT/pixel-<cell>.log).
# OUT/results.sqlite and OUT/report.md hold the stored rows.
#
#   benchmarks/gpu_check.sh OUT
#
# The training tests read MNIST from $RNNBENCH_TEST_DATA (default ../shared/data); where that
# folder is not beside the checkout, copy its mnist/ into an ignored folder of the checkout and
# point RNNBENCH_TEST_DATA there.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
data=${RNNBENCH_TEST_DATA:-../shared/data}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" \
    | tee "$out/device.log" || exit 1
status=0
stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit, tee its output to OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee "$out/$name.log"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/$name.log"
    # the pixel stages train until their time is up: there the limit's exit (124) is the plan
    if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 124 ] && [ "${name#pixel-}" != "$name" ]; }; then status=1; fi
}
stage pytest 110 python3 -m pytest -q -p no:cacheprovider -k cuda tests
for precision in 32 tf32 bf16-mixed; do
    stage "speed-$precision" 30 python3 -m bench speed --device cuda --precision "$precision" --shape fastrnns \
        --cell lstm_fused --cell lstm_handwritten --cell gru_fused --cell gru_handwritten --repeats 20 --out "$out"
done
stage speed-compiled 90 python3 -m bench speed --device cuda --precision 32 --shape fastrnns \
    --cell lstm_fused --cell lstm_compiled --cell gru_fused --cell gru_compiled --repeats 20 --out "$out"
stage harness 45 python3 benchmarks/harness_overhead.py --device cuda --rounds 1 --cell lstm_fused --data-dir "$data"
packing() {  # in a child bash (timeout runs commands, not functions): uses the exported out and data
    for parallel in 1 6; do
        local start=$SECONDS
        python3 -m bench run --task mnist-row --cell rnn_fused --cell lstm_fused --cell gru_fused --seed 0 --seed 1 \
            --parallel "$parallel" --out "$out/packing-$parallel" --data-dir "$data" --no-progress || return 1
        echo "packing: --parallel $parallel: six runs in $((SECONDS - start)) s of wall time"
    done
}
export -f packing
export out data
stage packing 90 bash -c packing
for cell in lstm_fused gru_fused rnn_fused; do  # ~7.5 ms a step on an H200: 18 s is about 2,000 steps after start-up
    stage "pixel-$cell" 18 python3 benchmarks/pixel_mnist_protocol.py --device cuda --cell "$cell" --steps 100000 \
        --every 500 --data-dir "$data"
done
exit $status
