#!/usr/bin/env bash
# The whole toy recipe on one GPU in a fixed time (its first run, on an H100, trained the shipped toy
# teacher's first 615 steps; docs/toy-model.md).
#   bash scripts/gpu_toy_recipe.sh OUT_DIR [TRAIN_MINUTES] [WALL_SECONDS] [SPEED_SECONDS]
#   TRAIN_EVALUATOR=1 EVALUATOR_STEPS=3000 [EVALUATOR_CORE_FRACTION=0.5] bash scripts/gpu_toy_recipe.sh ...   # retrain the toy evaluator first
#   RECIPE_ARGS="--teacher src/hummingbird_t2v/assets/toy/model --vocabulary core --parallel" bash scripts/gpu_toy_recipe.sh ...
#     # the students of the built-in model, on its core vocabulary (no teacher stage), each pair side by side
#   TEACHER_INIT=src/hummingbird_t2v/assets/toy/model TEACHER_INIT_STEPS=700 bash scripts/gpu_toy_recipe.sh ...
#     # first train that teacher on (core vocabulary, configs/toy_teacher_core.yaml with per-frame offset
#     # noise), score it (its videos saved to runs/toy-gpu/teacher_continued.npz), then the recipe's students
#     # from it on the core vocabulary; TEACHER_INIT_SETS adds --set arguments to that training, e.g.
#     # TEACHER_INIT_SETS="--set model.unet.config.frame_position_embedding=true" (docs/models.md)
# Trains the teacher, prunes, distils (stage 1, two layouts) and consistency-distils (stage 2, with
# and without the toy reward), evaluates every model with the shipped toy evaluator, then packs the
# results and the model weights into OUT_DIR (split into parts under 15 MiB: cat
# OUT_DIR/weights.tar.part-* | tar -x). At these tiny sizes a GPU step is mostly fixed overhead:
# raise the batch sizes below if the budget is short.
# Runs from a checkout: PYTHONPATH=src, no install needed where torch and the dependencies exist.
# No sample videos are written (sample.prompts=[]), so PyAV need not be installed on the GPU host.
set -uo pipefail
out=${1:?usage: gpu_toy_recipe.sh OUT_DIR [TRAIN_MINUTES] [WALL_SECONDS] [SPEED_SECONDS]}
minutes=${2:-6}
wall=${3:-420}
speed=${4:-60}
evaluator=${EVALUATOR_SECONDS:-100}
evaluator_steps=${EVALUATOR_STEPS:-3000}
device=${DEVICE:-cuda}
run=runs/toy-gpu
mkdir -p "$out" && out=$(cd "$out" && pwd)
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } > "$out/recipe.log" 2>&1
# Optionally a new toy evaluator first (the reward stage and the evaluation both use it). It is
# written beside the shipped one and replaces it only when its training finished.
if [ "${TRAIN_EVALUATOR:-0}" = 1 ]; then
  # --max-minutes cuts the steps to the time budget; the timeout only guards against a hang.
  timeout $((evaluator + 60)) python3 -m hummingbird_t2v.toyworld.evaluator --device "$device" --workers 12 --batch-size 64 \
    --steps "$evaluator_steps" --core-fraction "${EVALUATOR_CORE_FRACTION:-0}" --max-minutes "$(python3 -c "print($evaluator / 60)")" --out "$run/evaluator" 2>&1 | tee -a "$out/recipe.log" \
    && [ -f "$run/evaluator/model.safetensors" ] && cp "$run/evaluator/"* src/hummingbird_t2v/assets/toy/evaluator/
fi
# Optionally train an existing teacher on (the built-in model's stages B and C were CPU runs of this).
if [ -n "${TEACHER_INIT:-}" ]; then
  timeout "${TEACHER_INIT_SECONDS:-240}" python3 -m hummingbird_t2v.cli train base --config configs/toy_teacher_core.yaml \
    --output "$run/teacher-continued" --set model.unet.path="$TEACHER_INIT" --set objective.frame_offset_noise=0.25 \
    --set run.max_steps="${TEACHER_INIT_STEPS:-700}" --set optim.lr="${TEACHER_INIT_LR:-3e-4}" --set data.batch_size=32 \
    --set data.num_workers=6 --set sample.every=0 --set 'sample.prompts=[]' --set logging.tensorboard=false --set checkpoint.every=250 \
    --set run.device="$device" ${TEACHER_INIT_SETS:-} 2>&1 | tee -a "$out/recipe.log"
  if [ -f "$run/teacher-continued/model/model_index.json" ]; then
    timeout "${TEACHER_EVAL_SECONDS:-90}" python3 -m hummingbird_t2v.cli toyworld eval --model "$run/teacher-continued/model" \
      --n "${TEACHER_EVAL_N:-96}" --batch-size 96 --device "$device" --save-videos "$run/teacher_continued.npz" \
      --json "$out/teacher_continued.json" 2>&1 | tee -a "$out/recipe.log"
    RECIPE_ARGS="--teacher $run/teacher-continued/model --vocabulary core ${RECIPE_ARGS:-}"
  else
    echo "the continued teacher did not finish: no recipe" | tee -a "$out/recipe.log"; wall=0
  fi
fi
# Batches sized for a GPU (the configs' batches are sized for 2 CPU cores); learning rates as configured.
if [ "$wall" -gt 0 ]; then
timeout "$wall" python3 -m hummingbird_t2v.cli toyworld recipe -o "$run" --minutes "$minutes" \
  --set all:data.num_workers=6 --set all:logging.tensorboard=false --set 'all:sample.prompts=[]' \
  --set teacher:data.batch_size=32 --set teacher:sample.every=0 --set teacher:checkpoint.every=1000 \
  --set distill-paper:data.batch_size=32 --set distill-importance:data.batch_size=32 \
  --set consistency:data.batch_size=16 --set consistency-reward:data.batch_size=16 \
  --set distill-paper:sample.every=0 --set distill-importance:sample.every=0 \
  --set consistency:sample.every=0 --set consistency-reward:sample.every=0 \
  --n 200 --eval-batch-size 50 ${RECIPE_ARGS:-} 2>&1 | tee -a "$out/recipe.log"
echo "recipe exit ${PIPESTATUS[0]}" >> "$out/recipe.log"
fi
# Results and logs (small), then weights: the teacher's model folder and the stage-2 U-Nets (or the
# stage-1 ones when stage 2 did not finish); students share the teacher's VAE and text encoder.
(cd "$run" && tar -czf "$out/results.tar.gz" --exclude='checkpoints' --exclude='model' --exclude='.probe-*' \
   --exclude='pruned-paper' --exclude='*.npz' . 2>/dev/null)
# (With RECIPE_ARGS="--teacher MODEL --vocabulary core" there is no teacher folder to pack.)
weights=()
[ -d "$run/teacher/model" ] && weights+=(teacher/model)
[ -d "$run/teacher-continued/model" ] && weights+=(teacher-continued/model/unet teacher-continued/model/model_index.json)
teacher_parts=${#weights[@]}
for stage in consistency consistency-reward; do
  [ -f "$run/$stage/model/unet/model.safetensors" ] && weights+=("$stage/model/unet" "$stage/model/model_index.json")
done
if [ ${#weights[@]} -eq "$teacher_parts" ]; then
  for stage in distill-paper distill-importance; do
    [ -f "$run/$stage/model/unet/model.safetensors" ] && weights+=("$stage/model/unet" "$stage/model/model_index.json")
  done
fi
[ ${#weights[@]} -gt 0 ] && (cd "$run" && tar -cf - "${weights[@]}" 2>/dev/null) | split -b 15m - "$out/weights.tar.part-"
# Last, with the time left, the full-size speed benchmark (VideoCrafter2 teacher against hb-0.7b, random weights).
[ "$speed" -gt 0 ] && timeout "$speed" python3 benchmarks/speed.py --device "$device" --dtype bf16 --frames 16 --height 320 --width 512 \
  --repeats 3 2>&1 | tee "$out/speed_gpu.log"
ls -la "$out"
