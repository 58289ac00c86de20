#!/usr/bin/env bash
# Trains the two paper configs side by side on one GPU within a wall-clock budget, as one
# prepared command for a borrowed GPU machine (a short lease, one try). The epoch count of each
# run is set from a two-epoch trial of both runs side by side, so that each cosine schedule ends
# inside the budget; a run still going at the deadline is stopped with SIGINT (its last epoch is
# kept). Each run's last.pt is then packed without its optimiser state, weights in fp16, cut
# into pieces small enough to travel back (scripts/unpack_device_run.py joins them).
#
#   scripts/device_train_paper.sh DATA RUNS BUDGET_S [CONFIG ...]
#
# DATA: PNG pairs (images/, masks/); the validation frames are left out of DATA beforehand, so the
# runs train with --validation-count 0 and are validated afterwards with ipp-seg evaluate.
# Environment: DEVICE (default cuda), PYTHON (default python3), SAVE_S (seconds per epoch allowed
# for writing the checkpoints; default 3), EPOCHS (a fixed epoch count for every run: no trial, the
# whole budget trains), EXTRA (arguments appended to the recipe, which override its own: a later
# stage, e.g. EXTRA="--init-from W.pt --lr 3e-4 --warmup-epochs 1 --seed 2").
set -u
data=$1; runs=$2; budget=$3; shift 3
configs=("$@"); [ ${#configs[@]} -gt 0 ] || configs=(dssau-net-paper star-dssau-net-paper)
device=${DEVICE:-cuda}; py=${PYTHON:-python3}; save_s=${SAVE_S:-3}
recipe=(--lr 5e-4 --warmup-epochs 2 --ce-weights 1,3,1 --dice-weights 2,1 --shape-weight 1
        --validation-count 0 --seed 0 --batch-size 16 --threads 4 --device "$device")
# EXTRA is split into words (not expanded as a pattern)
read -r -a extra <<< "${EXTRA:-}"
recipe+=("${extra[@]}")
export PYTHONUNBUFFERED=1
mkdir -p "$runs"
# The GPU image has no SimpleITK (nothing can be installed there), which ipp_seg imports at load
# for MetaImage files; PNG training never calls it. A placeholder module that fails on any use
# lets the package load (it stands in only where the real one is missing).
if ! $py -c "import SimpleITK" 2>/dev/null; then
    mkdir -p "$runs/placeholder/SimpleITK"
    printf 'def __getattr__(name):\n    raise ImportError("SimpleITK is not installed here (placeholder module)")\n' \
        > "$runs/placeholder/SimpleITK/__init__.py"
    export PYTHONPATH="$(realpath "$runs/placeholder")${PYTHONPATH:+:$PYTHONPATH}"
fi
total=$(ls "$data/images" | wc -l)
trial_count=$(( total / 4 < 200 ? total / 4 : 200 ))

start=$(date +%s)
declare -A epochs
if [ -n "${EPOCHS:-}" ]; then
    for c in "${configs[@]}"; do epochs[$c]=$EPOCHS; done
    left=$budget
else
    # Trial: 200 frames (a quarter of a small folder), two epochs, every config at once (as they
    # will run); the second epoch's time is steady.
    trial="$runs/trial-data"; mkdir -p "$trial/images" "$trial/masks"
    for f in $(ls "$data/images" | head -$trial_count); do
        ln -sf "$(realpath "$data/images/$f")" "$trial/images/$f"
        ln -sf "$(realpath "$data/masks/$f")" "$trial/masks/$f"
    done
    for c in "${configs[@]}"; do
        $py -m ipp_seg train "$trial" --config "$c" --out "$runs/trial-$c" --epochs 2 "${recipe[@]}" \
            > "$runs/trial-$c.log" 2>&1 &
    done
    wait
    echo "trial took $(( $(date +%s) - start )) s"
    left=$(( budget - ($(date +%s) - start) ))

    for c in "${configs[@]}"; do
        epochs[$c]=$($py - "$runs/trial-$c/history.jsonl" "$total" "$left" "$save_s" "$trial_count" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
per_epoch = lines[-1]["seconds"] * int(sys.argv[2]) / int(sys.argv[5]) + float(sys.argv[4])
# 20 s for start-up and reading the data; no run when not even one epoch fits.
print(max(0, int((int(sys.argv[3]) - 20) / per_epoch)))
EOF
        ) || { echo "trial of $c failed:"; tail -20 "$runs/trial-$c.log"; epochs[$c]=0; }
        echo "$c: ${epochs[$c]} epochs in ${left} s"
    done
fi

for c in "${configs[@]}"; do
    [ "${epochs[$c]}" -gt 0 ] || continue
    echo "$py -m ipp_seg -v train DATA --config $c --out RUN --epochs ${epochs[$c]} ${recipe[*]}" > "$runs/$c.command"
    timeout -s INT $(( left + 30 )) $py -m ipp_seg -v train "$data" --config "$c" --out "$runs/$c" \
        --epochs "${epochs[$c]}" "${recipe[@]}" > "$runs/$c.log" 2>&1 &
done
wait
echo "training ended $(( $(date +%s) - start )) s after the start (the trial's, where there was one)"

for c in "${configs[@]}"; do
    [ -f "$runs/$c/last.pt" ] || { echo "$c: no last.pt"; tail -20 "$runs/$c.log"; continue; }
    $py - "$runs/$c/last.pt" "$runs/$c-pack" <<'EOF'
import os, sys, torch
from ipp_seg.train.loop import load_torch_file
ckpt = load_torch_file(sys.argv[1])
for key in ("optimiser", "numpy_rng", "torch_rng", "raw_model", "content_sha256"):  # the digest: of the full file
    ckpt.pop(key, None)
ckpt["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
ckpt["packed_as"] = "fp16 weights, optimiser state dropped (scripts/device_train_paper.sh)"
os.makedirs(sys.argv[2], exist_ok=True)
path = os.path.join(sys.argv[2], "weights.pt")
torch.save(ckpt, path)
print(sys.argv[1], "epoch", ckpt["epoch"], "packed", os.path.getsize(path), "bytes")
EOF
    (cd "$runs/$c-pack" && split -b 15M -d weights.pt part- && rm weights.pt && sha256sum part-* > parts.sha256)
    mkdir -p "$runs/$c-meta"
    cp "$runs/$c/history.jsonl" "$runs/$c/settings.json" "$runs/$c/split.json" "$runs/$c.log" \
        "$runs/$c.command" "$runs/trial-$c.log" "$runs/$c-meta/" 2>/dev/null
    tar -C "$runs/$c-meta" -czf "$runs/$c-pack/run.tar.gz" .
    ls -l "$runs/$c-pack"
done
