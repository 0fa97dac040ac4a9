#!/usr/bin/env bash
# GPU check: a few training steps of each CUDA path that the CPU test suite cannot run, on 2 GPUs, with one
# PASS/FAIL line per check (a few minutes). Configs: scripts/gpu_check/*.yaml; data: a small synthetic set.
#
#   scripts/gpu_check.sh [WORK_DIR]     (default: a new temporary directory; its logs are kept on failure)
#
#   1. eager fp16, Partial FC with OneFlow's fused class sampler
#   2. nn.Graph fp16, model parallel, 4 steps then resumed to 8 (the graph's loss scale in the checkpoint)
#   3. forced overflow (FACEFLOW_FORCE_OVERFLOW=2:1): rank 1's shard overflows at step 2, both ranks skip
#      that update and halve the loss scale (no hang, clip_grad_norm set); resumed, the scale comes back
#
# Exit status: 0 all passed, 1 a check failed, 2 nothing was run (fewer than 2 GPUs, or no faceflow).
# PYTHON names the interpreter with faceflow installed (default: the repository's .venv, else python3).
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIGS="$REPO/scripts/gpu_check"
NEEDED=2

refuse() { echo "gpu_check: $*; nothing was run" >&2; exit 2; }

visible_gpus() {  # the GPUs a run started here would see
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .
  else
    nvidia-smi -L 2>/dev/null | grep -c '^GPU '
  fi
}

command -v nvidia-smi >/dev/null 2>&1 || refuse "needs $NEEDED NVIDIA GPUs, but nvidia-smi is not installed (no NVIDIA driver)"
found=$(visible_gpus)
[ "$found" -ge "$NEEDED" ] || refuse "needs $NEEDED NVIDIA GPUs, found $found (nvidia-smi -L${CUDA_VISIBLE_DEVICES+, CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES})"

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
"$PYTHON" -c "import faceflow" 2>/dev/null || refuse "$PYTHON cannot import faceflow (set PYTHON)"
cuda=$("$PYTHON" -c "from faceflow.runtime.flow import flow; print(flow.cuda.device_count())" 2>/dev/null | tail -1)
[ "${cuda:-0}" -ge "$NEEDED" ] 2>/dev/null || refuse "OneFlow sees ${cuda:-no} CUDA devices, $NEEDED needed (driver too old for OneFlow's CUDA?)"

WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/faceflow-gpu-check.XXXXXX")}
mkdir -p "$WORK"
failed=0
passed=0

faceflow() { "$PYTHON" -m faceflow.cli.main "$@"; }
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }

# train NAME CONFIG [--set k=v ...]: one `faceflow train` into WORK/NAME, its console output appended to
# WORK/NAME.out; stopped after 15 minutes (a run whose ranks disagree waits in a collective for ever)
train() {
  local name=$1 config=$2
  shift 2
  timeout -k 30 900 "$PYTHON" -m faceflow.cli.main train "$CONFIGS/$config" --out "$WORK/$name" \
    --set "train_data=$WORK/data/train" "$@" >> "$WORK/$name.out" 2>&1
}

# last_loss NAME: the loss of the last logged step of WORK/NAME ("nan" if there is none)
last_loss() {
  "$PYTHON" -c 'import json, sys; lines = open(sys.argv[1]).read().splitlines(); print(json.loads(lines[-1])["loss"])' \
    "$WORK/$1/metrics.jsonl" 2>/dev/null || echo nan
}

# saved_scale NAME STEP: the eager loss scale kept in checkpoint STEP of WORK/NAME
saved_scale() {
  "$PYTHON" -c 'import json, sys; print("%g" % json.load(open(sys.argv[1]))["loss_scale"]["scale"])' \
    "$WORK/$1/checkpoints/step_$(printf %06d "$2")/state.json" 2>/dev/null || echo none
}

finite() { "$PYTHON" -c 'import math, sys; sys.exit(0 if math.isfinite(float(sys.argv[1])) else 1)' "$1"; }

echo "gpu_check: $found GPUs; work directory $WORK"
if ! { faceflow synth "$WORK/synth" --classes 200 --per-class 8 --pairs 100 &&
       faceflow convert rec "$WORK/synth" "$WORK/data/train" --parts 2 --shuffle --quiet; } > "$WORK/data.out" 2>&1; then
  fail "synthetic training data (see $WORK/data.out)"
  exit 1
fi

# 1. eager fp16 + Partial FC + fused sampler
what="eager fp16, Partial FC 0.5, fused sampler"
if train pfc eager_pfc_fused.yaml && grep -q "partial_fc .* eager on cuda with AMP" "$WORK/pfc.out" &&
   finite "$(last_loss pfc)"; then
  pass "$what: 20 steps, last loss $(last_loss pfc)"
else
  fail "$what (see $WORK/pfc.out)"
fi

# 2. graph fp16 + model parallel, then one resume
what="graph fp16, model parallel, resumed at step 4"
scale_kept='import sys; from faceflow.runtime.flow import flow
sys.exit(0 if any("DynamicLossScale" in key for key in flow.load(sys.argv[1])) else 1)'
if train graph graph_model_parallel.yaml --set max_steps=4 && grep -q "graph on cuda with AMP" "$WORK/graph.out" &&
   train graph graph_model_parallel.yaml && grep -q "resuming from .*step_000004 (step 4 of 8)" "$WORK/graph.out" &&
   "$PYTHON" -c "$scale_kept" "$WORK/graph/checkpoints/step_000008/optimizer" >> "$WORK/graph.out" 2>&1 &&
   finite "$(last_loss graph)"; then
  pass "$what: 8 steps, loss scale in the checkpoint, last loss $(last_loss graph)"
else
  fail "$what (see $WORK/graph.out)"
fi

# 3. forced overflow on one rank: both skip, the scale halves, and a resume restores it
what="forced overflow on rank 1 at step 2"
export FACEFLOW_FORCE_OVERFLOW=2:1
if train overflow overflow.yaml --set max_steps=3 &&
   grep -q "step 2: gradient overflow, update skipped; loss scale" "$WORK/overflow.out" &&
   scale=$(saved_scale overflow 3) && [ "$scale" != none ] &&
   train overflow overflow.yaml &&
   grep -q "resuming from .*step_000003 (step 3 of 6, loss scale $scale)" "$WORK/overflow.out" &&
   finite "$(last_loss overflow)"; then
  pass "$what: both ranks skipped it, loss scale $scale kept through the resume"
else
  fail "$what (see $WORK/overflow.out; a timeout means the ranks disagreed and one waits in a collective)"
fi
unset FACEFLOW_FORCE_OVERFLOW

echo "gpu_check: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || exit 1
[ -n "${1:-}" ] || rm -rf "$WORK"
