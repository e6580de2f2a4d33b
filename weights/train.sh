#!/usr/bin/env bash
# Re-train one shipped checkpoint: weights/train.sh VARIANT SCALE
#   e.g. weights/train.sh crossnet 8   →  weights/crossnet_x8.pt and weights/crossnet_x8.json
# Data: 32 + 4 synthetic light fields (320×512, seed 1) with every view's true disparity, rendered once
# into data/weights-syn.
# Training: weights/recipes/VARIANT_xSCALE.toml, else VARIANT.toml (a CPU-sized configuration of the
# paper's architecture), run folder runs/weights/VARIANT_xSCALE (rerunning resumes). Where an earlier-stage
# recipe VARIANT_xSCALE_flow.toml (flow pre-training) exists, it runs first, into
# runs/weights/VARIANT_xSCALE_flow, and the main run starts from its weights. Where a later-stage recipe
# VARIANT_xSCALE_converge.toml exists, it continues from the main run's best checkpoint, in
# runs/weights/VARIANT_xSCALE_converge, until the validation PSNR plateaus ([plateau] in the recipe), and
# that run is exported. Where a real-pair recipe VARIANT_xSCALE_real.toml exists, it continues from the
# last stage's best checkpoint on real footage mixed with the light fields (refsr prepare video builtin →
# data/video), in runs/weights/VARIANT_xSCALE_real. Where a guided-matching recipe VARIANT_xSCALE_guided.toml
# exists, it continues from that run's best checkpoint on the same data, taking the reference matched in two
# passes (docs/real-suite.md, "guided matching"), in runs/weights/VARIANT_xSCALE_guided. The last stage run
# is exported. A recipe's `init` starts it
# from another shipped checkpoint, so some depend on others: crossnet 8 → crossnetpp 8 → crossnetpp 4,
# crossnet 8 → crossnet 4, refsrnet 8 → refsrnet 4. Export (weights/export.py): float16 weights (float32
# where float16 moved the bench PSNR, see below) + model card with every stage's validation curve.
set -euo pipefail
variant=${1:?usage: weights/train.sh VARIANT SCALE}
scale=${2:?usage: weights/train.sh VARIANT SCALE}
cd "$(dirname "$0")/.."
refsr=${REFSR:-.venv/bin/refsr}
python=${PYTHON:-.venv/bin/python}
data=data/weights-syn
run=runs/weights/${variant}_x${scale}
recipe=weights/recipes/${variant}_x${scale}.toml
[ -f "$recipe" ] || recipe=weights/recipes/$variant.toml
[ -f $data/train.h5 ] || $refsr prepare synthetic --out $data --count 32 --test-count 4 --seed 1 --disparity
start=$(date +%s)
init=()
if [ -f "weights/recipes/${variant}_x${scale}_flow.toml" ]; then   # flow pre-training, then start from it
  $refsr train --variant "$variant" --scale "$scale" --data $data/train.h5 \
    --config "weights/recipes/${variant}_x${scale}_flow.toml" --out "${run}_flow" --device cpu
  init=(--init "${run}_flow/model.pt")
fi
$refsr train --variant "$variant" --scale "$scale" --data $data/train.h5 --val $data/test.h5 \
  --config "$recipe" --out "$run" --device cpu "${init[@]}"
last=$run
earlier=()
if [ -f "weights/recipes/${variant}_x${scale}_converge.toml" ]; then   # until the validation PSNR plateaus
  $refsr train --variant "$variant" --scale "$scale" --data $data/train.h5 --val $data/test.h5 \
    --config "weights/recipes/${variant}_x${scale}_converge.toml" --out "${run}_converge" --device cpu \
    --init "$run/best.pt"
  last=${run}_converge
  earlier=(--earlier "$run")
fi
if [ -f "weights/recipes/${variant}_x${scale}_real.toml" ]; then   # the real-pair stage (issue 22)
  [ -f data/video/train.h5 ] || $refsr prepare video builtin --out data/video
  $refsr train --variant "$variant" --scale "$scale" --data data/video/train.h5 --data $data/train.h5 --mix 0.5,0.5 \
    --config "weights/recipes/${variant}_x${scale}_real.toml" --out "${run}_real" --device cpu --init "$last/best.pt"
  earlier+=(--earlier "$last")
  last=${run}_real
fi
if [ -f "weights/recipes/${variant}_x${scale}_guided.toml" ]; then   # the guided-matching stage (issue 22)
  $refsr train --variant "$variant" --scale "$scale" --data data/video/train.h5 --data $data/train.h5 --mix 0.5,0.5 \
    --config "weights/recipes/${variant}_x${scale}_guided.toml" --out "${run}_guided" --device cpu --init "$last/best.pt"
  earlier+=(--earlier "$last")
  last=${run}_guided
fi
[ -d "${run}_flow" ] && earlier=(--earlier "${run}_flow" "${earlier[@]}")
wall=$(( $(date +%s) - start ))
# float32 where float16 moved the built-in bench PSNR by 0.001 dB or more (weights/README.md), else float16.
case "${variant}_x${scale}" in crossnet_x8|crossnet_x4|crossnetpp_x8|crossnetpp_x4|refsrnet_x4|refsrnet_x8) dtype=(--float32) ;; *) dtype=() ;; esac
# Rematching steps, chosen after training on 80 real pairs neither the bench nor the networks saw: a step is
# added while it gains at least 0.1 dB there (docs/real-suite.md, "rematching").
case "${variant}_x${scale}" in
  crossnet_x4|crossnet_x8|crossnetpp_x4|crossnetpp_x8|refsrnet_x4) rematch=(--rematch gate) ;;
  crossmpi_x8|refsrnet_x8) rematch=(--rematch network) ;;
  *) rematch=() ;;
esac
# Matched patch sides, chosen on the same pairs: the best list there (their pastes blended per pixel) where it
# gains at least 0.1 dB over one side (docs/real-suite.md, "patch sizes"); the rest keep the 3 of their recipe.
case "${variant}_x${scale}" in
  crossmpi_x4|crossnet_x4|crossnetpp_x4|refsrnet_x4) patches=(--matching-patch 3,5,7) ;;
  *) patches=() ;;
esac
$python weights/export.py "$variant" "$scale" "$last" "${earlier[@]}" --wall "$wall" "${dtype[@]}" "${rematch[@]}" \
  "${patches[@]}"
