#!/usr/bin/env bash
# One GPU check for issue 6, sized for one call of about 9-10 minutes on an H100. Run it from the repository
# root (or anywhere) on a machine with one GPU where jax (CUDA), torch (CUDA), flax, optax and
# ml_collections import (PYTHONPATH set by the caller; nothing is installed here):
#
#     OUT=/tmp/results PYTHON=python3 BUDGET_S=540 bash benchmarks/gpu_check.sh
#
# Set CASES and the other variables on this script's own command (`OUT=... CASES=... bash gpu_check.sh`) or
# export them first: a prefix of another command before it (`CASES=x pip install ... && bash ...`) does not
# reach it, and the default cases run instead.
#
# Environment: OUT (default /tmp/gpu_check; a non-empty OUT left by an earlier run is moved aside to
# OUT.previous-TIME first), PYTHON (default python), BUDGET_S (default 540: the whole
# check, start-up included, stays within about BUDGET_S + 10 s), BIG_BATCH (default 256), CASES (which
# cases, in which order; default all, as listed below), MODEL_ARGS (default empty: extra arguments for
# every benchmark), BENCH_ARGS (default empty: for the train-step cases only) and BUNDLE_DIR (default
# unset: a folder other than $OUT where to leave results.tgz, everything under $OUT but the raw trace,
# trace.tgz, the raw trace, and report.txt: three files, for a caller that can fetch only a few, such as
# the device tool: `R=$OUT; OUT=/tmp/results BUNDLE_DIR=$R ... bash benchmarks/gpu_check.sh`; note that
# `OUT=/tmp/results BUNDLE_DIR=$OUT` would give both the new value; the bundle is made again after every
# case, so a command killed at its limit still leaves the cases it finished). With a small model and matmul floor
# they make a dry run of the whole check on a CPU (tests/test_benchmarks.py runs one):
#     MODEL_ARGS="--latent 64 --layers 2 --ff 128 --heads 4 --text-width 32 --text-layers 1 --text-heads 2
#     --text-ff 64" BENCH_ARGS="--matmul-size 256" BUDGET_S=900 bash benchmarks/gpu_check.sh
# Where jax's default backend is not gpu (no GPU visible to jax, or JAX_PLATFORMS=cpu), the check still
# runs every case, as such a dry run, but says so at the start, in summary.txt and in report.txt ("DRY
# RUN on cpu, not a GPU"): its ratios and MFU mean nothing, and no goal is judged. Without MODEL_ARGS a
# dry run times the full-size model on the CPU: minutes per case.
# MODEL_ARGS="--kernels pallas" runs every case with the model's Pallas kernels (model.kernels), the
# sampler's too.
#
# Writes under $OUT: env.txt (versions, nvidia-smi), per case NAME.log (its whole output, written as it
# comes) and NAME.json (rewritten by the benchmark after every finished row, so a case cut short keeps
# its finished rows; "complete": false until it ends), summary.txt (each case's exit status and seconds)
# and report.txt (the final summary, benchmarks/gpu_summary.py). The console gets each case's rows and
# compile times as they come, without the per-round log lines (those stay in the .log), then the summary.
#
# Compiling one train step took XLA:GPU 104.6 s on an H100 machine (jax 0.11.2, 2026-11-28; 43 s on
# 2026-11-26 with the code of that date) and 85 s at B=32, 174 s at B=256 on an H200 (2026-12-04), so every
# case that compiles a new step is given ~230-280 s and the default budget fits the first four cases
# (train_step, big_batch, profile and pipelined: about 400 s by that H200's times, pipelined's estimated).
# A second call can run the rest, e.g. CASES=compile_flags,fp32 BUDGET_S=400: ~15 s of start-up, then
# compile_flags for up to its 200-s limit (85 s on that H200), and fp32 runs only with at least its
# minimum of 150 s left (400 leaves it 185 s or more; with the H200's 85 s its whole 230-s limit); with
# less, say BUDGET_S=230, fp32 is skipped. A case named twice in CASES runs once. The cases, most
# important first. Each has its own time limit; a case runs with the smaller of its limit and what is
# left of the budget, and is skipped when that is below its minimum (124 = cut at the limit):
#   train_step     B=32 T=196 D=264: ours jax-bf16 vs the twin torch-bf16 (autocast) + torch-fp32, 10
#                  interleaved repeats after 3 warm-up steps, with the matmul floor
#   big_batch      B=$BIG_BATCH: ours bf16 vs the twin bf16 autocast; model FLOP utilisation (MFU% =
#                  analytic FLOPs / s / the card's bf16 matmul rate measured in the same run); the goals:
#                  >= 3x the twin's AMP throughput, >= 40% MFU
#   profile        B=$BIG_BATCH: where ours bf16's step time goes (benchmarks/profile_step.py: per kind of
#                  op and the top ops, from a jax.profiler trace); the raw trace and the compiled program's
#                  text stay in $OUT/profile_trace (open the trace in https://ui.perfetto.dev); the step
#                  comes from big_batch's compilation, cached
#   pipelined      B=$BIG_BATCH: ours bf16 vs the twin bf16 autocast, 8 steps per timed call dispatched back
#                  to back and waited for once (bench_train_step.py --pipeline 8), as launch.py's loop waits
#                  only at each log: the throughput a training run gets, its MFU against big_batch's
#                  (which waits for every step: on the H200 a quarter of that step's wall time was the
#                  device waiting for the host); ours comes from big_batch's compilation, cached
#   compile_flags  B=32: ours bf16 compiled with XLA_FLAGS=--xla_gpu_enable_triton_gemm=false (every
#                  product through cuBLAS): its compile time and step time against train_step's, to see
#                  whether autotuning Triton products is where the compile time goes
#   fp32           B=32: ours fp32 (TF32 products) vs the twin fp32 eager (TF32 allowed too: --torch-tf32)
#                  and bf16 autocast
#   products       B=$BIG_BATCH: every product of ours bf16's step timed alone in jax and in torch
#                  (benchmarks/bench_products.py; no step compiled): the step's matmul time at each
#                  library's own rate, against big_batch's step times (the rest is not matmul)
#   sampling       DDPM 1000 steps and DDIM 50 steps at 4x60 and 32x196 (DDPM first), ours bf16 vs the
#                  twin's Python loop under bf16 autocast, as is and hoisting what ours hoists (weights
#                  cast to bf16 once), one repeat; the goal: >= 3x at DDPM 1000
#   geometric      B=32: ours bf16 with and without the bone-length term (its overhead); the step without
#                  it is train_step's jax-bf16, loaded from this check's compilation cache
#   beat_window    B=32 T=360 (configs/beat.py's training window, data.max_motion_length): ours bf16 vs
#                  the twin bf16 autocast (on the 2-core CPU the ratio fell from 0.99x at T=196 to 0.81x)
#   autotune_off   B=32: ours bf16 with XLA_FLAGS=--xla_gpu_autotune_level=0 (no autotuning at all)
#   torch_compile  B=32: ours bf16 vs the twin bf16 eager and under torch.compile(mode="reduce-overhead",
#                  CUDA graphs): the 3x goal against a twin that is not bound by its Python host ("x tc16")
#   variants       B=$BIG_BATCH, 2 layers (fewer products to autotune): spellings and XLA options aimed at
#                  the memory-bound fusions that ran far below the card's bandwidth in the H200's B=256
#                  profile (benchmarks/bench_variants.py: paired rounds, each checked to compute the same
#                  step; benchmarks/RESULTS.md, "read for bytes"). $GPU_VARIANTS, by default: current;
#                  read=pallas+style=pallas (the feed-forward stylization's backward pass as one Pallas
#                  kernel, the attention blocks' query bias, read and stylization as three,
#                  motion_ddpm_jax/kernels.py: 22% fewer bytes beside the products at B=256 by
#                  gpu_program.py's deviceless count, 19% in all); context=pallas+read=pallas+style=pallas
#                  (besides, the attention's keys and values as one product and their context, key
#                  softmax and K^T V, as two kernels: 32% fewer beside the products, 30% in all);
#                  standardize=saved-statistics (LayerNorm's backward pass from saved statistics: the
#                  fusion of two LayerNorm backward passes ran at 1.3 TB/s); attention=tokens-major (the
#                  linear attention with no transposes spelled out: the query softmaxes, fused with the
#                  move of the heads, ran at 0.8-1.2 TB/s);
#                  xla:xla_disable_hlo_passes=triton-softmax-rewriter (those slow fusions are all Triton
#                  block-level ones, made by that pass: XLA's own reduction emitters instead). An option
#                  this jax's XLA does not know is reported and skipped. Each variant compiles a new
#                  step (~90 s at B=256, 2 layers, on an H200-class CPU's count): bench_variants.py
#                  compiles one more only while it and the rounds fit the case's limit (CASE_LIMIT_S,
#                  passed by run) and names those it left out, so list the variants wanted most first.
#                  Out of the default:
#                  attention=block-diagonal (23% more FLOPs, 12% more bytes by the deviceless count),
#                  style=written-backward (style=pallas's backward written out in jax: 2.4% fewer bytes),
#                  style=pallas alone (18% fewer bytes beside the products) and ffn=compute-dtype-output
#                  (the feed-forward output in bf16, as autocast rounds it: another 0.26 GB per layer).
#                  The kernels' tile sizes: GPU_VARIANTS=current,style=pallas,style=pallas-rows8,
#                  style=pallas-rows32 (context=pallas+read=pallas+style=pallas-rows32: the read's and the
#                  context's kernels' tiles too; 16 frames at the least).
#                  The CPU-chosen spellings can be timed the same way:
#                  GPU_VARIANTS=current,positions=autodiff,softmax=autodiff,standardize=twopass
#   generate       sampling.generate over 256 samples of 40-196 frames (--mode eval's default clip count), DDIM
#                  50 steps, bf16 (benchmarks/bench_generate.py): every call at the longest length (what
#                  generate does on a GPU) against calls grouped by length (its default on a CPU, where it
#                  sampled this request 1.20x faster from cold, 541 -> 450 s on the 2-core EPYC): whether
#                  the grouping's extra programs cost more than it saves here
#   profile_variant  (only when named in CASES) B=$BIG_BATCH, 2 layers: profile_step.py of $PROFILE_VARIANT
#                  (a variant of bench_variants.py; default current), its trace in $OUT/profile_variant_trace
#                  (bundled with profile's in trace.tgz): where a variant's time and bytes went
set -u
case ${1:-} in
  -h | --help)  # the header above, without its comment marks: nothing runs
    sed -n '2,/^set -u$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0 ;;
  "") ;;
  *)
    echo "gpu_check.sh: unknown argument '$1': it takes none; its settings are environment variables" \
      "(OUT, PYTHON, BUDGET_S, CASES, ...): see bash benchmarks/gpu_check.sh --help" >&2
    exit 2 ;;
esac
OUT=${OUT:-/tmp/gpu_check}
PYTHON=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-540}
BIG_BATCH=${BIG_BATCH:-256}
PROFILE_VARIANT=${PROFILE_VARIANT:-current}
GPU_VARIANTS=${GPU_VARIANTS:-current,read=pallas+style=pallas,context=pallas+read=pallas+style=pallas,standardize=saved-statistics,attention=tokens-major,xla:xla_disable_hlo_passes=triton-softmax-rewriter}
read -r -a MODEL <<< "${MODEL_ARGS:-}"
read -r -a BENCH <<< "${BENCH_ARGS:-}"
read -r -a GENERATE <<< "${GENERATE_ARGS:-}"  # added to the generate case's flags (a dry run's smaller request)
CASES=${CASES:-train_step,big_batch,profile,pipelined,compile_flags,fp32,products,sampling,geometric,beat_window,autotune_off,torch_compile,variants,generate}
if [[ -d $OUT ]] && [[ -n $(ls -A "$OUT") ]]; then  # an earlier run's results: kept, out of this run's way
  previous="$OUT.previous-$(date -u +%Y%m%dT%H%M%S)"
  mv "$OUT" "$previous" && echo "moved the earlier results in $OUT to $previous"
fi
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
export PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1
# A compilation cache private to this check (removed at the end): geometric reuses train_step's jax-bf16
# step. Exact hits only: XLA's per-fusion autotuning cache stays off, so no other compile time changes.
CACHE=$(mktemp -d /tmp/gpu_check_jax_cache.XXXXXX)
export JAX_COMPILATION_CACHE_DIR=$CACHE JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES=none
trap 'rm -rf "$CACHE"' EXIT
: > "$OUT/summary.txt"

{
  date -u
  echo "budget ${BUDGET_S} s, cases $CASES, big batch $BIG_BATCH"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv 2>&1
  else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
  fi
  timeout 90 "$PYTHON" - <<'PY' 2>&1
import importlib.util

import flax
import jax
import optax

print("jax", jax.__version__, jax.devices())
print("jax backend", jax.default_backend(), flush=True)
print("flax", flax.__version__, "optax", optax.__version__)
if importlib.util.find_spec("torch") is None:
    print("torch: not installed (the twin's cases fail: pip install -e '.[bench]')")
else:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no CUDA device)"
    print("torch", torch.__version__, device, "cuda", torch.version.cuda)
PY
} > "$OUT/env.txt"
cat "$OUT/env.txt"
# A GPU or a dry run: jax's default backend, read off env.txt (no second start of Python).
BACKEND=$(sed -n 's/^jax backend //p' "$OUT/env.txt")
DRY_RUN=
if [[ $BACKEND != gpu ]]; then
  DRY_RUN="DRY RUN on ${BACKEND:-an unknown backend (jax did not start: env.txt)}, not a GPU:"
  DRY_RUN+=" ratios and MFU mean nothing"
  echo "$DRY_RUN" | tee -a "$OUT/summary.txt"
  if [[ -z ${MODEL_ARGS:-} ]]; then
    echo "no MODEL_ARGS: the cases time the full-size model off a GPU, minutes each (a dry run wants" \
      "the small model of --help)"
  fi
fi

run() {  # run NAME LIMIT_S MIN_S ARGS...: one benchmark within min(its limit, what is left of the budget),
  # with CASE_XLA_FLAGS (when set) added to XLA_FLAGS for this case alone
  local name=$1 limit=$2 minimum=$3 start=$SECONDS
  shift 3
  local left=$((BUDGET_S - SECONDS))
  if ((left < minimum)); then
    echo "$name: skipped (${left} s of the budget left, needs ${minimum})" | tee -a "$OUT/summary.txt"
    return
  fi
  local seconds=$((left < limit ? left : limit))
  echo "=== $name (limit ${seconds} s; ${left} s of the budget left)"
  # The console: the rows and each compile time; the .log: everything.
  local flags="${XLA_FLAGS:-} ${CASE_XLA_FLAGS:-}"
  [[ -n ${CASE_XLA_FLAGS:-} ]] && echo "XLA_FLAGS=${flags# }"
  XLA_FLAGS="${flags# }" CASE_LIMIT_S=$seconds timeout -k 5 "$seconds" "$PYTHON" "$@" --json "$OUT/$name.json" 2>&1 \
    | tee "$OUT/$name.log" \
    | grep --line-buffered -v -E '^\[.*\] (round |preparing |peak memory of )|^[WI][0-9]{4} '
  local status=${PIPESTATUS[0]}
  echo "$name: exit $status after $((SECONDS - start)) s$( ((status == 124 || status == 137)) && echo ' (cut at its limit)')" \
    | tee -a "$OUT/summary.txt"
  if ((status != 0 && status != 124 && status != 137)); then
    tail -n 15 "$OUT/$name.log"
  fi
  bundle > /dev/null
}

bundle() {  # report.txt, and with BUNDLE_DIR the three files there: after every case and at the end
  timeout 30 "$PYTHON" benchmarks/gpu_summary.py "$OUT" --cases "$CASES" > "$OUT/report.txt" 2>&1
  [[ -n ${BUNDLE_DIR:-} ]] || return 0
  if mkdir -p "$BUNDLE_DIR" && [[ $(realpath "$BUNDLE_DIR") == "$(realpath "$OUT")" ]]; then
    echo "BUNDLE_DIR is OUT ($OUT): no bundle (it would hold itself); give it a folder of its own"
    return 0
  fi
  tar czf "$BUNDLE_DIR/results.tgz" -C "$(dirname "$OUT")" --exclude="$(basename "$OUT")/profile_trace" \
    --exclude="$(basename "$OUT")/profile_variant_trace" "$(basename "$OUT")"
  local traces=() trace
  for trace in profile_trace profile_variant_trace; do [[ -d $OUT/$trace ]] && traces+=("$trace"); done
  ((${#traces[@]})) && tar czf "$BUNDLE_DIR/trace.tgz" -C "$OUT" "${traces[@]}"
  cp "$OUT/report.txt" "$BUNDLE_DIR/report.txt" 2>/dev/null
  ls -l "$BUNDLE_DIR"
}

train=(benchmarks/bench_train_step.py --features 264 --frames 196 --memory none "${MODEL[@]}" "${BENCH[@]}")
beat=(benchmarks/bench_train_step.py --features 264 --frames 360 --memory none "${MODEL[@]}" "${BENCH[@]}")
declare -A DONE=()
for case in ${CASES//,/ }; do
  if [[ -n ${DONE[$case]:-} ]]; then
    echo "$case: named again in CASES, run once (its $case.json is kept)" | tee -a "$OUT/summary.txt"
    continue
  fi
  DONE[$case]=1
  case $case in
    train_step)
      run train_step 230 150 "${train[@]}" --batch 32 --geometric off \
        --impls jax-bf16,torch-bf16,torch-fp32 --repeats 10 --warmup 3 ;;
    big_batch)
      run big_batch 280 150 "${train[@]}" --batch "$BIG_BATCH" --geometric off \
        --impls jax-bf16,torch-bf16 --repeats 5 --warmup 2 ;;
    profile)  # the step of big_batch's jax-bf16: compiled from this check's cache when big_batch ran
      run profile 90 45 benchmarks/profile_step.py --features 264 --frames 196 --batch "$BIG_BATCH" \
        --dtype bfloat16 --steps 3 --warmup 2 --top 40 --trace-dir "$OUT/profile_trace" "${MODEL[@]}" ;;
    profile_variant)  # not in the default CASES: a variant's program, 2 layers, e.g. the variants case's best.
      # Without command buffers (CUDA graphs), so that every kernel's event names its op: inside them a
      # Pallas kernel's event carries only the kernel's own name, which profile_step.py cannot place.
      CASE_XLA_FLAGS=--xla_gpu_enable_command_buffer= run profile_variant 200 90 benchmarks/profile_step.py --features 264 --frames 196 --batch "$BIG_BATCH" \
        --dtype bfloat16 --steps 3 --warmup 2 --top 40 --trace-dir "$OUT/profile_variant_trace" \
        --variant "$PROFILE_VARIANT" "${MODEL[@]}" --layers 2 ;;
    pipelined)  # ours: big_batch's step, from this check's cache
      run pipelined 150 60 "${train[@]}" --batch "$BIG_BATCH" --geometric off --impls jax-bf16,torch-bf16 \
        --pipeline 8 --repeats 3 --warmup 1 ;;
    compile_flags)
      CASE_XLA_FLAGS=--xla_gpu_enable_triton_gemm=false run compile_flags 200 120 "${train[@]}" --batch 32 \
        --geometric off --impls jax-bf16 --repeats 10 --warmup 3 ;;
    fp32)
      run fp32 230 150 "${train[@]}" --batch 32 --geometric off --impls jax-fp32,torch-fp32,torch-bf16 \
        --torch-tf32 --repeats 10 --warmup 3 ;;
    products)
      run products 150 60 benchmarks/bench_products.py --features 264 --frames 196 --batch "$BIG_BATCH" \
        --dtype bfloat16 --impls jax,torch --repeats 10 --budget 1 --step-repeats 0 "${MODEL[@]}" ;;
    autotune_off)
      CASE_XLA_FLAGS=--xla_gpu_autotune_level=0 run autotune_off 200 120 "${train[@]}" --batch 32 \
        --geometric off --impls jax-bf16 --repeats 10 --warmup 3 ;;
    geometric)
      run geometric 230 150 "${train[@]}" --batch 32 --geometric both --impls jax-bf16 --repeats 10 --warmup 3 ;;
    beat_window)
      run beat_window 230 150 "${beat[@]}" --batch 32 --geometric off --impls jax-bf16,torch-bf16 \
        --repeats 5 --warmup 2 ;;
    sampling)
      run sampling 270 120 benchmarks/bench_sampling.py --features 264 \
        --cases ddpm:4x60,ddpm:32x196,ddim:4x60,ddim:32x196 \
        --impls jax-bf16,jax-bf16-stepwise,torch-bf16,torch-bf16-hoisted \
        --repeats 1 --warmup 1 "${MODEL[@]}" ;;
    variants)
      run variants 480 200 benchmarks/bench_variants.py --features 264 --frames 196 --batch "$BIG_BATCH" \
        --dtype bfloat16 --rounds 5 --variants "$GPU_VARIANTS" "${MODEL[@]}" --layers 2 ;;
    generate)
      run generate 200 90 benchmarks/bench_generate.py --features 264 --samples 256 --lengths uniform:40:196 \
        --steps 50 --dtype bfloat16 --repeats 2 "${MODEL[@]}" "${GENERATE[@]}" ;;
    torch_compile)
      run torch_compile 300 150 "${train[@]}" --batch 32 --geometric off \
        --impls jax-bf16,torch-bf16,torch-compile-bf16 --torch-compile-mode reduce-overhead --repeats 10 --warmup 3 ;;
    *) echo "unknown case $case (known: train_step big_batch profile pipelined compile_flags fp32 products sampling" \
      "geometric beat_window autotune_off torch_compile variants generate profile_variant)" ;;
  esac
done

echo "=== summary (total ${SECONDS} s; results in $OUT)"
bundle
cat "$OUT/report.txt"
cat "$OUT/summary.txt"
[[ -n $DRY_RUN ]] && echo "$DRY_RUN"
exit 0
