cd /work/main
T="glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
for r in 1 2; do
 for mode in thp base; do
  if [ $mode = thp ]; then G="$T:glibc.malloc.hugetlb=1"; else G="$T"; fi
  GLIBC_TUNABLES=$G .venv/bin/python benchmarks/bench_train_step.py --batch 32 --frames 196 --features 264 --geometric off --memory none --impls jax-bf16,torch-bf16 --repeats 5 --warmup 1 --json /tmp/s25/thp_${mode}_r$r.json > /tmp/s25/thp_${mode}_r$r.log 2>&1 &
  pid=$!
  sleep 60; grep -E "AnonHuge|Rss" /proc/$pid/smaps_rollup > /tmp/s25/thp_${mode}_r${r}_smaps.txt
  wait $pid
 done
done
