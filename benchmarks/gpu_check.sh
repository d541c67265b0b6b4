#!/usr/bin/env bash
# The checks that need a GPU, in order of importance, each stage under a time limit and teed into
# OUT (a stage that hangs loses nothing already written). Their limits sum to more than one call's
# few minutes, so the script runs the stages that fit in a time budget (default 540 s), in the
# order given (default: every stage, in this order), and names those it left out:
#   pytest            the CUDA tests: the cells against cuDNN (FP32 and at every --precision),
#                     `rnnbench speed` and training runs on CUDA (OUT/pytest.log);
#   paper-pixel       the `paper` budget (Bai et al. 2018) of mnist-pixel to its end for lstm_fused,
#   paper-permuted    gru_fused and rnn_fused, then their test accuracies (and of mnist-permuted);
#   density-paper     the density task's paper budget (mnist-density: 7 Diagonal layers of h 16, LSTM
#                     gating) for 180 s of training, its validation NLL printed every 20 s
#                     (benchmarks/density_curve.py);
#   speed-32, speed-tf32, speed-bf16-mixed
#                     `rnnbench speed --device cuda` of the fused and hand-written cells at the
#                     fastrnns shape at each precision;
#   speed-compiled    the compiled cells (CUDA graphs, in pieces of 25 steps) against cuDNN at
#                     precision 32 at the fastrnns shape, first call included; target <= 1.5x,
#                     first call <= 60 s;
#   speed-minimal     minGRU and minLSTM (log-space scan, sequential) against cuDNN's GRU and LSTM at
#                     precision 32, at the fastrnns shape and at 4,096 steps of it;
#   harness           the harness against a bare loop on the GPU, after a warm-up fit of each;
#   packing           six mnist-row quick runs one at a time, then six at once (--parallel 6).
# OUT/results.sqlite and OUT/report.md hold the stored rows.
#
#   benchmarks/gpu_check.sh OUT                          # every stage that fits in 540 s
#   benchmarks/gpu_check.sh OUT --budget 300 paper-pixel speed-32
#   benchmarks/gpu_check.sh OUT --plan                   # which stages would run; runs nothing, needs no GPU
#
# The training stages read MNIST from $RNNBENCH_TEST_DATA (default ../shared/data); where that
# folder is not beside the checkout, copy its mnist/ into an ignored folder of the checkout and
# point RNNBENCH_TEST_DATA there.
set -uo pipefail
ORDER=(pytest paper-pixel paper-permuted density-paper speed-32 speed-tf32 speed-bf16-mixed speed-compiled speed-minimal harness packing)
declare -A LIMIT=([pytest]=110 [paper-pixel]=300 [paper-permuted]=300 [density-paper]=210 [speed-32]=30 [speed-tf32]=30
    [speed-bf16-mixed]=30 [speed-compiled]=90 [speed-minimal]=60 [harness]=45 [packing]=90)
out=""
budget=540
plan=0
chosen=()
while [ $# -gt 0 ]; do
    case $1 in
        --budget) budget=${2:?--budget needs a number of seconds}; shift 2 ;;
        --plan) plan=1; shift ;;
        -*) echo "unknown option $1 (options: --budget SECONDS, --plan)" >&2; exit 2 ;;
        *) if [ -z "$out" ]; then out=$1; else chosen+=("$1"); fi; shift ;;
    esac
done
[ -n "$out" ] || { echo "usage: benchmarks/gpu_check.sh OUT [--budget SECONDS] [--plan] [STAGE...]" >&2; exit 2; }
case $budget in '' | *[!0-9]*) echo "--budget must be a whole number of seconds, got '$budget'" >&2; exit 2 ;; esac
[ ${#chosen[@]} -gt 0 ] || chosen=("${ORDER[@]}")
for name in "${chosen[@]}"; do
    [ -n "${LIMIT[$name]:-}" ] || { echo "unknown stage '$name'; stages: ${ORDER[*]}" >&2; exit 2; }
done
# the stages that fit, in the order given: a stage runs when its limit fits in what is left
planned=()
left_out=()
left=$budget
for name in "${chosen[@]}"; do
    if [ "${LIMIT[$name]}" -le "$left" ]; then planned+=("$name"); left=$((left - LIMIT[$name])); else left_out+=("$name"); fi
done
echo "stages to run within ${budget} s: ${planned[*]:-none}"
echo "left out (over the budget): ${left_out[*]:-none}"
[ "$plan" -eq 0 ] || exit 0
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
    [ "$rc" -eq 0 ] || status=1
}
packing() {  # in a child bash (timeout runs commands, not functions): uses the exported out and data
    for parallel in 1 6; do
        local start=$SECONDS
        python3 -m bench run --task mnist-row --cell rnn_fused --cell lstm_fused --cell gru_fused --seed 0 --seed 1 \
            --parallel "$parallel" --out "$out/packing-$parallel" --data-dir "$data" --no-progress || return 1
        echo "packing: --parallel $parallel: six runs in $((SECONDS - start)) s of wall time"
    done
}
paper() {  # paper TASK: the three fused cells to the end of the paper budget (~7.5 ms a step on an H200), then their rows
    python3 -m bench run --task "$1" --budget paper --cell lstm_fused --cell gru_fused --cell rnn_fused --seed 0 \
        --out "$out" --data-dir "$data" --no-progress || return 1
    python3 -m bench report --out "$out" >/dev/null && sed -n "/^## $1\$/,/^Baselines/p" "$out/report.md"
}
export -f packing paper
export out data
for name in "${planned[@]}"; do
    case $name in
        pytest) stage pytest "${LIMIT[$name]}" python3 -m pytest -q -p no:cacheprovider -k cuda tests ;;
        paper-pixel) stage "$name" "${LIMIT[$name]}" bash -c 'paper mnist-pixel' ;;
        paper-permuted) stage "$name" "${LIMIT[$name]}" bash -c 'paper mnist-permuted' ;;
        density-paper) stage "$name" "${LIMIT[$name]}" python3 benchmarks/density_curve.py --device cuda --seconds 180 \
            --every 20 --data-dir "$data" ;;
        speed-compiled) stage "$name" "${LIMIT[$name]}" python3 -m bench speed --device cuda --precision 32 --shape fastrnns \
            --cell lstm_fused --cell lstm_compiled --cell gru_fused --cell gru_compiled --repeats 20 --out "$out" ;;
        speed-minimal) stage "$name" "${LIMIT[$name]}" python3 -m bench speed --device cuda --precision 32 --shape fastrnns \
            --shape 64,4096,512,512 --cell mingru_scan --cell mingru_sequential --cell minlstm_scan \
            --cell minlstm_sequential --cell gru_fused --cell lstm_fused --repeats 10 --out "$out" ;;
        speed-*) stage "$name" "${LIMIT[$name]}" python3 -m bench speed --device cuda --precision "${name#speed-}" --shape fastrnns \
            --cell lstm_fused --cell lstm_handwritten --cell gru_fused --cell gru_handwritten --repeats 20 --out "$out" ;;
        harness) stage harness "${LIMIT[$name]}" python3 benchmarks/harness_overhead.py --device cuda --rounds 1 \
            --cell lstm_fused --data-dir "$data" ;;
        packing) stage packing "${LIMIT[$name]}" bash -c packing ;;
    esac
done
[ ${#left_out[@]} -eq 0 ] || echo "left out (over the ${budget} s budget): ${left_out[*]}"
exit $status
