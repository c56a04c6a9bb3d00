#!/usr/bin/env bash
# One GPU check for issue 6, run from anywhere on a machine with one GPU, jax (CUDA), torch (CUDA),
# flax, optax and ml_collections importable (PYTHONPATH set up; nothing is installed here):
#
#     OUT=/some/dir bash benchmarks/gpu_check.sh        # PYTHON=... to pick the interpreter
#
# Writes under $OUT: env.txt (versions, nvidia-smi), one .log (the printed table) and one .json per run,
# and summary.txt (each run's exit status and seconds). The runs, most important first; each is skipped
# when what is left of the overall budget (BUDGET_S, default 450 s) is below its own limit:
#   1. train_step      B=32 T=196 D=264: ours fp32 + bf16 vs the twin fp32 + bf16 autocast, with
#                      peak memory (host and device) of ours bf16 and the twin bf16
#   2. sampling        DDPM 1000 steps and DDIM 50 steps, 4x60 and 32x196, ours vs the twin, bf16 and fp32
#   3. geometric       B=32 D=264: ours bf16 with and without the bone-length term (its overhead)
#   4. big_batch       B=128: ours bf16 vs the twin bf16 autocast (model FLOP utilisation at a fuller card)
#   5. torch_compile   B=32: the twin bf16 under torch.compile
set -u
OUT=${OUT:-/tmp/gpu_check}
PYTHON=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-450}
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
export PYTHONWARNINGS=ignore

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1
  "$PYTHON" -c "import jax, torch, flax, optax; print('jax', jax.__version__, jax.devices()); \
print('torch', torch.__version__, torch.cuda.get_device_name(0), 'cuda', torch.version.cuda); \
print('flax', flax.__version__, 'optax', optax.__version__)" 2>&1
} > "$OUT/env.txt"
cat "$OUT/env.txt"

run() {  # run NAME LIMIT_S ARGS...: one benchmark, within its limit and the overall budget
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  if (( BUDGET_S - SECONDS < limit )); then
    echo "$name: skipped ($((BUDGET_S - SECONDS)) s of the budget left, needs $limit)" | tee -a "$OUT/summary.txt"
    return
  fi
  timeout "$limit" "$PYTHON" "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  local status=$?
  echo "$name: exit $status after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  grep -v '^\[' "$OUT/$name.log" | tail -n 25
}

run train_step 170 benchmarks/bench_train_step.py --features 264 --geometric off \
  --impls jax-fp32,jax-bf16,torch-fp32,torch-bf16 --repeats 10 --warmup 3 --memory jax-bf16,torch-bf16
run sampling 150 benchmarks/bench_sampling.py --sizes 4x60,32x196 --samplers ddpm,ddim \
  --impls jax-bf16,torch-bf16,jax-fp32,torch-fp32 --repeats 2
run geometric 60 benchmarks/bench_train_step.py --features 264 --geometric both --impls jax-bf16 \
  --repeats 10 --warmup 3 --memory none
run big_batch 60 benchmarks/bench_train_step.py --batch 128 --features 264 --geometric off \
  --impls jax-bf16,torch-bf16 --repeats 5 --warmup 2 --memory none
run torch_compile 60 benchmarks/bench_train_step.py --features 264 --geometric off \
  --impls torch-compile-bf16 --repeats 10 --warmup 3 --memory none
echo "total $SECONDS s; results in $OUT"
