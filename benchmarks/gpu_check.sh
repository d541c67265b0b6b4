#!/usr/bin/env bash
# The checks that need a GPU, in one command: the CUDA tests (cells against cuDNN, `rnnbench
# speed` and a training run on CUDA), then `rnnbench speed --device cuda` for the fused and
# compiled cells at the fastrnns and DeepBench-like shapes, then the first steps of the pixel-MNIST
# `paper` protocol for lstm_fused, gru_fused and rnn_fused (at most 80 s each). Writes
# OUT/pytest.log, OUT/speed.log, OUT/pixel-<cell>.log, OUT/results.sqlite and OUT/report.md.
#
#   benchmarks/gpu_check.sh OUT
#
# The training test reads MNIST from $RNNBENCH_TEST_DATA (default ../shared/data); where that
# folder is not beside the checkout, copy its mnist/ into an ignored folder of the checkout and
# point RNNBENCH_TEST_DATA there.
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
status=0
python3 -m pytest -q -p no:cacheprovider -k cuda tests 2>&1 | tee "$out/pytest.log" || status=1
python3 -m bench speed --device cuda --cell lstm_fused --cell lstm_compiled --cell gru_fused --cell gru_compiled \
    --cell rnn_fused --cell rnn_compiled --repeats 30 --out "$out" 2>&1 | tee "$out/speed.log" || status=1
for cell in lstm_fused gru_fused rnn_fused; do  # ~7.5 ms a step on an H200: 80 s is about 8,000 steps
    timeout 80 python3 benchmarks/pixel_mnist_protocol.py --device cuda --cell "$cell" --steps 100000 --every 500 \
        --data-dir "${RNNBENCH_TEST_DATA:-../shared/data}" 2>&1 | tee "$out/pixel-$cell.log" || true
done
exit $status
