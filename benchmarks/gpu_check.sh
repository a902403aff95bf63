#!/usr/bin/env bash
# Issue 14's GPU check, for a session that is lent a CUDA machine. Every section has its own
# time limit and prints as it goes, so a cut-short run still shows what it measured. In all
# the limits add up to 685 s, more than one 600 s device call: run it as two parts, eager
# (515 s at most) then compile (230 s; it reuses the checkpoints in $WORK). Run from anywhere:
#
#   bash benchmarks/gpu_check.sh --part=eager     # on the GPU machine, then --part=compile
#   bash benchmarks/gpu_check.sh --part=offload   # issue 24's offload rows (about 5 minutes)
#   bash benchmarks/gpu_check.sh --dry-run        # the same steps on the CPU at toy size: checks the script
#
# Prints, for README.md and benchmarks/README.md: the machine; the CUDA tests (graph replay
# bit for bit against eager for GLIDE's and unCLIP's networks, compiled against eager, batch
# memory measured); the dtype evidence (pictures' distance from fp32, per-call speed fp16 vs
# bf16, eager vs graph); unCLIP's stages eager and replayed as graphs at batch 1 and 8
# (benchmarks/unclip_bench.py --graphs); benchmarks/pipeline.py's tables (in-process rows per
# batch size, whole processes, start-up); a profile of one batch-1 picture outside the networks
# (benchmarks/profile_picture.py: GPU idle share, every wait for the GPU by line); the host
# work per batch (benchmarks/host_work.py); NCHW against NHWC (benchmarks/layout_check.py);
# then the compiled rows. Full-size random
# checkpoints are written once into $WORK.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
DRY=0; PART=all
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --part=*) PART=${arg#--part=} ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--part=all|eager|compile|offload]" >&2; exit 2 ;;
  esac
done
WORK=${GLIDE_CHECK_WORK:-/tmp/glidecli-gpu-check}
export GLIDE_CACHE="$WORK/cache"   # the compile cache goes to $GLIDE_CACHE/inductor
mkdir -p "$WORK"
START=$(date +%s)

section() { echo; echo "=== $1 (at $(( $(date +%s) - START )) s)"; }
# run LIMIT COMMAND...: the command under a time limit; a timeout is reported, not fatal
run() {
  local limit=$(( $1 * SLOW )); shift
  timeout --signal=INT --kill-after=20 "$limit" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "(stopped after ${limit} s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "(exit status $rc)"
  return 0
}

if [ $DRY -eq 1 ]; then
  SLOW=5  # a shared 2-core CPU: generous limits
  DEVICE=cpu; SCALE=(--scale tiny --threads 1); BATCHES=1; COUNTS=1; COMPILE_BATCHES=1; COMPILE_COUNTS=1
  DTYPE_ARGS=(--device cpu --tiny --batch-sizes 1 --dtypes fp32 --repeats 1); TESTS=()
  UNCLIP_ARGS=(--tiny --graphs --stages prior,decoder,sr --batch-sizes 1,2 --repeats 1 --threads 1)
  HOST_ARGS=(--batch-sizes 1,8 --repeats 1); LAYOUT_ARGS=(--device cpu --tiny)
else
  SLOW=1
  DEVICE=cuda; SCALE=(--scale full); BATCHES=1,8,32,64; COUNTS=1,64; COMPILE_BATCHES=64; COMPILE_COUNTS=64
  DTYPE_ARGS=(--device cuda --batch-sizes 1,32 --dtypes fp16,bf16); TESTS=(-k "cuda or gpu")
  UNCLIP_ARGS=(--device cuda --dtype fp16 --batch-sizes 1,8 --repeats 3 --graphs)
  HOST_ARGS=(--repeats 3); LAYOUT_ARGS=(--device cuda --dtype fp16 --batch-sizes 1,32)
fi

eager() { [ "$PART" != compile ] && [ "$PART" != offload ]; }
section "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
git log -1 --format='glidecli commit %h %s' 2>/dev/null

section "random full-size checkpoints (written once into $WORK)"
run 60 python3 benchmarks/pipeline.py "${SCALE[@]}" --work "$WORK" --prepare-only

eager && section "GPU tests: graph replay = eager bit for bit, compile close to eager, batch memory measured"
eager && run 75 python3 -m pytest -q -rs tests/render/test_accel.py tests/render/test_batching.py tests/render/test_unclip_accel.py "${TESTS[@]}"

eager && section "dtype evidence (benchmarks/dtype_check.py)"
eager && run 50 python3 benchmarks/dtype_check.py "${DTYPE_ARGS[@]}"

eager && section "pipeline: eager rows, whole processes, start-up (benchmarks/pipeline.py)"
eager && run 160 python3 benchmarks/pipeline.py --device $DEVICE "${SCALE[@]}" --work "$WORK" --only default --sections in-process,process,startup \
  --batch-sizes $BATCHES --process-counts $COUNTS

eager && section "host work per batch: noise, conversion to PIL, PNG writing (benchmarks/host_work.py)"
eager && run 15 python3 benchmarks/host_work.py --device $DEVICE "${HOST_ARGS[@]}"

eager && section "unCLIP stages beside GLIDE's, prior/decoder/SR eager and graphed (benchmarks/unclip_bench.py --graphs)"
eager && run 60 python3 benchmarks/unclip_bench.py "${UNCLIP_ARGS[@]}"

eager && section "layouts: GroupNorm's output layout, NCHW vs NHWC for a block and the base pair (benchmarks/layout_check.py)"
eager && run 45 python3 benchmarks/layout_check.py "${LAYOUT_ARGS[@]}"

eager && section "profile of one batch outside the networks: GPU idle share, waits for the GPU by line (benchmarks/profile_picture.py)"
eager && run 50 python3 benchmarks/profile_picture.py --device $DEVICE "${SCALE[@]}" --work "$WORK" --batch-size 1 --rows 12

# --part=offload alone (issue 24): unCLIP's peak memory and time per picture per --offload choice,
# with random full-size weights written once into $WORK/karlo-random-full (7.4 GB), and the
# offload tests on the GPU.
offload() { [ "$PART" = offload ] || [ "$PART" = all ]; }
if offload; then
  [ $DRY -eq 1 ] && MEMORY_ARGS=(--tiny) || MEMORY_ARGS=(--device cuda --dtype fp16)
  section "unCLIP --offload none|model|sequential: predicted and measured peak memory, s/picture (unclip_bench.py --memory)"
  run 300 python3 benchmarks/unclip_bench.py --memory "${MEMORY_ARGS[@]}" --weights-dir "$WORK/karlo-random"
  section "offload tests"
  run 60 python3 -m pytest -q -rs tests/render/test_offload.py
fi

[ "$PART" != eager ] && [ "$PART" != offload ] && section "pipeline: --compile rows (first compile of each shape is cold; the process rows use the cache)"
[ "$PART" != eager ] && [ "$PART" != offload ] && run 170 python3 benchmarks/pipeline.py --device $DEVICE "${SCALE[@]}" --work "$WORK" --only default --sections in-process,process \
  --compile --compile-only --batch-sizes $COMPILE_BATCHES --process-counts $COMPILE_COUNTS

section "done in $(( $(date +%s) - START )) s"
