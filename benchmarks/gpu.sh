#!/usr/bin/env bash
# GPU benchmarks in at most 5 minutes on one CUDA GPU (every step has its own timeout).
# Needs the project installed (pip install -e .) and the photos in $DATA. Prints one JSON
# line per benchmark, then the paper preset's last training record (img_per_s).
#
#   DATA=../shared/datasets/face-mask bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${DATA:-../shared/datasets/face-mask}"
PREP="${PREP:-runs/prep}"
PYTHON="${PYTHON:-python}"

if [[ ! -f "$PREP/prepare.json" ]]; then
  # both cached sizes: classifier_speed.py --size 128 trains from the 128 px cache
  timeout 80 masksynth prepare "$DATA" --out "$PREP" --size 64 --size 128
fi

timeout 60 "$PYTHON" benchmarks/gan_speed.py --data "$DATA" --prep "$PREP" \
  --device cuda --steps 20 --repeats 3
for size in 64 128; do
  timeout 45 "$PYTHON" benchmarks/classifier_speed.py --data "$DATA" --prep "$PREP" \
    --device cuda --size "$size" --steps 20 --repeats 3
done

# The paper preset end to end for a fixed number of epochs (two per-class pairs, batch 128).
run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
timeout 70 masksynth train-gan "$PREP" --out "$run" --preset paper --device cuda \
  --epochs 5 --no-final-metrics
echo "train-gan --preset paper, last record of metrics.jsonl:"
tail -n 1 "$run/metrics.jsonl"
