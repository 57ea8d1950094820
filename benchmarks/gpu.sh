#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one command (under 9 minutes on one H200): on the
# 36-model grid, 10 epochs x 50,000 training images (the CIFAR-10 subset repeated), the
# harness as `python -m sweep.grid` runs it by default (one worker per GPU, --pack auto),
# then the naive loop on the same work timed on 1 epoch and scaled by 10 (its line says so;
# scaling multiplies its per-model fixed costs too, which favours the harness),
# then the device's measured peak and the fraction of it each achieved; last the harness
# again in mixed_bfloat16, for its speed and test MSE beside float32's.
#
#   bash benchmarks/gpu.sh                               # on the GPU machine
#   DATA_DIR=/data TRAIN_IMAGES=256 EPOCHS=2 bash benchmarks/gpu.sh --limit 4   # a small CPU rehearsal
#
# Runs with JAX and without TensorFlow. Where Keras, Optuna and the rest are not installed,
# it installs them from wheels in .whl/ (prepared on a machine with a package index by
# `../shared/tools/device-wheels.sh tqdm scikit-image imageio tifffile lazy-loader networkx
# pillow cmaes scikit-learn threadpoolctl` in the project root). Extra arguments go to
# `python -m sweep.bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-../shared/data}
TRAIN_IMAGES=${TRAIN_IMAGES:-50000}
EPOCHS=${EPOCHS:-10}
export KERAS_BACKEND=jax
# The pack-size probe and the harness are separate JAX processes on one GPU: none may take
# most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if ! python3 -c "import keras, optuna, skimage, tqdm" 2>/dev/null; then
  if [ ! -d .whl ]; then
    echo "gpu.sh: Keras, Optuna, scikit-image or tqdm is missing and there is no .whl/ to install them from" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
echo "gpu.sh: $(date -u +%Y-%m-%dT%H:%MZ); $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || echo 'no GPU')"
python3 -c "import jax, keras; print(f'gpu.sh: JAX {jax.__version__} on {jax.devices()[0]}, Keras {keras.__version__}')"
timeout 400 python3 -m sweep.bench --data-dir "$DATA_DIR" --epochs "$EPOCHS" --train-images "$TRAIN_IMAGES" --naive-epochs 1 "$@"
# The same harness in bfloat16 (tensor cores): its speed and test MSE beside float32's above.
bf16=$(mktemp --suffix=.yaml)
sed -e 's/^name: seed002_grid$/name: seed002_grid_bf16/' -e 's/^  seed: 0$/  seed: 0\n  precision: mixed_bfloat16/' search_spaces/seed002_grid.yaml > "$bf16"
echo "gpu.sh: the harness again with precision: mixed_bfloat16"
exec timeout 130 python3 -m sweep.bench --data-dir "$DATA_DIR" --epochs "$EPOCHS" --train-images "$TRAIN_IMAGES" --modes harness --no-peak --space "$bf16" "$@"
