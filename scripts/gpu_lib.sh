# Helpers shared by the side-by-side GPU scripts (sourced, not run). Before sourcing, set:
#   out     the folder whose files come back (logs.tar.gz, weights.tar.part-*)
#   run     the folder the trainings write to
#   seconds each training's time limit
#   builtin the built-in model folder (its VAE, text encoder and caption prior complete a bare student)
# It sets `logs` and `log` and defines pack_logs, complete_student, train, pack_weights and evaluate. A training cut
# before its last step is exported from its newest checkpoint and says so in its log; the logs
# tarball is refreshed after every step so that a call cut short still returns what was done.
mkdir -p "$out" "$run/logs" && out=$(cd "$out" && pwd)
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
logs=$(cd "$run/logs" && pwd)
log=$logs/side_by_side.log
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__)"; } >> "$log" 2>&1

# A temporary name of its own per process: evaluations running side by side pack at once.
pack_logs() { tar -czf "$out/.logs.$BASHPID.tmp" -C "$logs" . && mv "$out/.logs.$BASHPID.tmp" "$out/logs.tar.gz"; }

# complete_student DIR: give a bare stage-1 student (unet/ + model_index.json) the built-in model's VAE, text
# encoder and caption prior (students distilled from it carry them unchanged).
complete_student() {
  local part
  for part in vae text_encoder prior; do
    [ -d "$1/$part" ] || cp -r "$builtin/$part" "$1/$part"
  done
}

# train NAME SUBCOMMAND ARGS...: `hummingbird train SUBCOMMAND ARGS --output $run/NAME`, at most $seconds.
train() {
  local name=$1; shift
  timeout "$seconds" python3 -m hummingbird_t2v.cli train "$@" --output "$run/$name" > "$logs/$name.log" 2>&1
  echo "$name: training exit $?" >> "$log"
  cp "$run/$name/logs/train.csv" "$logs/$name.train.csv" 2>/dev/null  # the per-step losses and rewards
  if [ ! -f "$run/$name/model/model_index.json" ] && [ -d "$run/$name/checkpoints" ]; then
    echo "$name: cut at ${seconds}s; exporting its newest checkpoint" | tee -a "$log" >> "$logs/$name.log"
    python3 -m hummingbird_t2v.cli train export --run "$run/$name" >> "$logs/$name.log" 2>&1
  fi
}

# pack_weights NAME...: the trained U-Nets and carried priors (the VAE and text encoder are the built-in model's), split
# under 15 MiB (the device tool returns at most 8 files): cat OUT/weights.tar.part-* | tar -x. NAME is a run
# ($run/NAME/model is packed) or a model folder under $run (e.g. NAME/model-200).
pack_weights() {
  local weights=() name folder
  for name in "$@"; do
    folder=$name/model
    [ -d "$run/$folder" ] || folder=$name
    [ -f "$run/$folder/unet/model.safetensors" ] && weights+=("$folder/unet" "$folder/model_index.json")
    [ -d "$run/$folder/prior" ] && weights+=("$folder/prior")  # listed in model_index.json: the folder must come too
  done
  [ ${#weights[@]} -gt 0 ] && (cd "$run" && tar -cf - "${weights[@]}") | split -b 15m - "$out/weights.tar.part-"
  pack_logs
}

# evaluate NAME ARGS...: `hummingbird toyworld eval ARGS` with its table in $logs/eval-NAME.log and JSON in $logs/NAME.json.
evaluate() {
  local name=$1; shift
  timeout "${EVAL_SECONDS:-120}" python3 -m hummingbird_t2v.cli toyworld eval --device "$device" --batch-size 96 \
    --json "$logs/$name.json" "$@" > "$logs/eval-$name.log" 2>&1
  echo "eval $name: exit $? at ${SECONDS}s" >> "$log"
  pack_logs
}
