#!/usr/bin/env bash
# Layer-wise linear probes (`squeezejax finetune --probe`) on real Fashion-MNIST:
# the authors' ImageNet SqueezeNet v1.0 (Deep Compression file in tests/data)
# against the same network at random initialisation, the usual control for how
# much of a probe's accuracy the pretraining gives.
#   bash scripts/linear_probe_example.sh [OUT]      (default OUT: runs/linear_probe)
# The image folder is 100 images per class of Fashion-MNIST's *test* split, so a
# model trained on the train split could be probed on it without leakage; every
# 5th image per class (200) is held out for the probe's accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/linear_probe}"
PY="${PYTHON:-python}"

[ -d "$OUT/fmnist" ] || "$PY" scripts/make_image_folder.py --dataset=fashion_mnist \
    --split=test --per_class=100 --out="$OUT/fmnist"
[ -d "$OUT/sq_authors" ] || "$PY" -m squeezejax convert \
    --from=tests/data/deep_compression/compressed_SqueezeNet.net --out="$OUT/sq_authors"
[ -d "$OUT/sq_random" ] || "$PY" -c "
import sys
from squeezejax import checkpoint, model
from squeezejax.compression import weights
spec = weights.authors_spec()  # same network, Caffe's xavier init, same preprocessing
checkpoint.save_model(sys.argv[1], spec, model.weights(model.create(spec, seed=0)),
                      {'preprocessing': dict(weights.CAFFE_PREPROCESSING)})" "$OUT/sq_random"

for init in sq_authors sq_random; do
  echo "== $init"
  "$PY" -m squeezejax finetune --init="$OUT/$init" --data="$OUT/fmnist" \
      --probe=conv1,fire3,fire5,fire7,fire9,conv10 --workdir="$OUT/probe_$init"
done
