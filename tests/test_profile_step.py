"""benchmarks/profile_step.py's reading of XLA programs and profiler traces: op kinds, dot FLOPs against the
analytic count, per-op sums from a trace (one module, each op once, control flow not summed)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_step  # noqa: E402

# An HLO module as XLA prints it (the text of `compiled.as_text()`), cut down: a dot fused with a tanh, a
# batched dot, a transposing fusion, a reduction with its reducer, a while loop and the entry's tuple.
HLO = """HloModule jit_train_step, entry_computation_layout={(f32[64,32]{1,0})->f32[]}

%fused_computation (param_0: f32[64,32], param_1: f32[32,16]) -> f32[64,16] {
  %param_0 = f32[64,32]{1,0} parameter(0)
  %param_1 = f32[32,16]{1,0} parameter(1)
  %dot.1 = f32[64,16]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %tanh.1 = f32[64,16]{1,0} tanh(%dot.1)
}

%fused_transpose (param_0.1: f32[16,64]) -> f32[64,16] {
  %param_0.1 = f32[16,64]{1,0} parameter(0)
  ROOT %transpose.1 = f32[64,16]{0,1} transpose(%param_0.1), dimensions={1,0}
}

%region_add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.9 = f32[] add(%a, %b)
}

%body (carry: (s32[], f32[4,8,5])) -> (s32[], f32[4,8,5]) {
  %carry = (s32[], f32[4,8,5]{2,1,0}) parameter(0)
  %i = s32[] get-tuple-element(%carry), index=0
  %x = f32[4,8,5]{2,1,0} get-tuple-element(%carry), index=1
  ROOT %next = (s32[], f32[4,8,5]{2,1,0}) tuple(%i, %x)
}

%cond (carry.1: (s32[], f32[4,8,5])) -> pred[] {
  %carry.1 = (s32[], f32[4,8,5]{2,1,0}) parameter(0)
  ROOT %done = pred[] constant(false)
}

ENTRY %main.5 (p0: f32[64,32], p1: f32[32,16], p2: f32[16,64], x: f32[4,8,5], y: f32[4,5,8]) -> f32[] {
  %p0 = f32[64,32]{1,0} parameter(0)
  %p1 = f32[32,16]{1,0} parameter(1)
  %p2 = f32[16,64]{1,0} parameter(2)
  %x.1 = f32[4,8,5]{2,1,0} parameter(3)
  %y.1 = f32[4,5,8]{2,1,0} parameter(4)
  %ynn_fusion.3 = f32[64,16]{1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation, BWD_META, YNN
  %batched = f32[4,8,8]{2,1,0} dot(%x.1, %y.1), lhs_batch_dims={0}, lhs_contracting_dims={2}, BATCHED
  %copy_fusion = f32[64,16]{1,0} fusion(%p2), kind=kLoop, calls=%fused_transpose
  %c0 = f32[] constant(0)
  %reduce.2 = f32[] reduce(%copy_fusion, %c0), dimensions={0,1}, to_apply=%region_add
  %loop = (s32[], f32[4,8,5]{2,1,0}) while(%carry.2), condition=%cond, body=%body
  %sum = f32[] add(%reduce.2, %reduce.2)
  ROOT %tuple = (f32[64,16]{1,0}, f32[]) tuple(%ynn_fusion.3, %sum)
}
"""
HLO = (
    HLO.replace(
        "BWD_META",
        'metadata={op_name="jit(train_step)/transpose(jvp(MotionTransformer))/MotionTransformer.denoise/'
        'layers_0/ffn/linear1/dot_general" stack_frame_id=3}',
    )
    .replace("YNN", 'backend_config={"fusion_config":{"kind":"__ynn_fusion"}}')
    .replace(
        "BATCHED",
        "rhs_batch_dims={0}, rhs_contracting_dims={1}, metadata={op_name="
        '"jit(train_step)/jvp(MotionTransformer)/MotionTransformer.denoise/layers_0/self_attention/dot_general"}',
    )
)


@pytest.fixture(scope="module")
def ops():
    return profile_step.parse_hlo(HLO)


def test_parse_hlo_reads_opcodes_shapes_calls_and_sources(ops):
    fused = ops["ynn_fusion.3"]
    assert (fused.opcode, fused.fusion_kind, fused.calls) == ("fusion", "kCustom", ("fused_computation",))
    assert fused.computation == "main.5" and fused.operands == ("p0", "p1")
    assert profile_step.dims(fused.shape) == (64, 16)
    assert ops["dot.1"].computation == "fused_computation" and ops["dot.1"].contracting == (1,)
    assert ops["loop"].calls == ("cond", "body") and ops["reduce.2"].calls == ("region_add",)
    assert profile_step.short_source(fused.source) == "bwd denoise/layers_0/ffn/linear1/dot_general"
    assert profile_step.short_source(ops["batched"].source).startswith("fwd denoise/layers_0/self_attention")


def test_dot_flops_are_two_times_outputs_times_contracted_size(ops):
    flops = profile_step.matmul_flops(ops)
    assert flops["ynn_fusion.3"] == 2 * 64 * 16 * 32  # through the fusion's body
    assert flops["batched"] == 2 * (4 * 8 * 8) * 5  # batch dims are output dims, K = 5
    assert flops["copy_fusion"] == 0 and flops["reduce.2"] == 0 and flops["sum"] == 0


def test_op_kinds(ops):
    inner = profile_step._opcodes_by_computation(ops)
    kind = {
        name: profile_step.op_kind(op, name, inner) for name, op in ops.items() if op.computation == "main.5"
    }
    assert kind["ynn_fusion.3"] == "matmul" and kind["batched"] == "matmul"
    assert kind["copy_fusion"] == "transpose/copy"
    assert kind["reduce.2"] == "reduction"
    assert kind["loop"] == "control"
    assert kind["sum"] == "elementwise"
    # Events of ops the program does not name are classified by their (kernel) names.
    assert profile_step.op_kind(None, "sm90_xmma_gemm_bf16bf16", inner) == "matmul"
    assert profile_step.op_kind(None, "input_reduce_fusion_3", inner) == "reduction"
    assert profile_step.op_kind(None, "loop_add_fusion", inner) == "elementwise"


def _event(name, dur, pid=1, tid=1, module="jit_train_step", ts=0.0):
    return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name,
            "args": {"hlo_op": name, "hlo_module": module}}  # fmt: skip


def test_summarize_counts_each_op_once_per_step_in_the_step_module(ops):
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "XLA Ops"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "Stream #7(Compute)"}},
        # two profiled steps on the per-op line
        _event("ynn_fusion.3", 300.0), _event("ynn_fusion.3", 500.0),
        _event("copy_fusion", 100.0), _event("copy_fusion", 100.0),
        _event("loop", 1000.0), _event("loop", 1000.0),
        # the same work seen as kernels on a stream: not counted again as ops, listed as kernels
        {**_event("ynn_fusion.3", 800.0, tid=2), "name": "sm90_gemm_kernel"},
        # another program (e.g. the benchmark's copies): not the step
        _event("copy_fusion", 5000.0, module="jit_copy"),
    ]  # fmt: skip
    summary = profile_step.summarize(events, ops, steps=2, module_hint="train_step")
    assert summary["module"] == "jit_train_step"
    rows = {row["op"]: row for row in summary["ops"]}
    assert rows["ynn_fusion.3"]["ms_per_step"] == pytest.approx(0.4)
    assert rows["copy_fusion"]["ms_per_step"] == pytest.approx(0.1)
    assert summary["op_ms_per_step"] == pytest.approx(0.5)  # the loop spans ops of its own: not summed
    assert summary["busy_ms_per_step"] == pytest.approx(0.5)  # all start at 0: the longest, 1 ms / 2 steps
    assert rows["ynn_fusion.3"]["share"] == pytest.approx(0.8) and rows["loop"]["share"] == 0.0
    kinds = {row["kind"]: row for row in summary["kinds"]}
    assert kinds["matmul"]["gflop_per_step"] == pytest.approx(2 * 64 * 16 * 32 / 1e9)
    assert summary["kernels"] == [{"kernel": "sm90_gemm_kernel", "ms_per_step": pytest.approx(0.4)}]


def test_busy_time_is_the_union_of_the_intervals():
    assert profile_step.busy_us([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert profile_step.busy_us([(3, 4)]) == 1 and profile_step.busy_us([]) == 0


def test_summarize_falls_back_to_device_kernels_by_name(ops):
    events = [
        {"ph": "M", "name": "process_name", "pid": 3, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 3, "tid": 1, "args": {"name": "Stream #7(Compute)"}},
        {"ph": "X", "pid": 3, "tid": 1, "ts": 0, "dur": 600.0, "name": "sm90_xmma_gemm_bf16", "args": {}},
        {"ph": "X", "pid": 3, "tid": 1, "ts": 0, "dur": 200.0, "name": "loop_add_fusion", "args": {}},
        {"ph": "X", "pid": 9, "tid": 1, "ts": 0, "dur": 9e6, "name": "PjitFunction(f)", "args": {}},  # host
    ]
    summary = profile_step.summarize(events, ops, steps=1)
    assert {row["op"]: row["kind"] for row in summary["ops"]} == {
        "sm90_xmma_gemm_bf16": "matmul",
        "loop_add_fusion": "elementwise",
    }
    assert summary["op_ms_per_step"] == pytest.approx(0.8)


def test_summarize_refuses_a_trace_without_op_events(ops):
    with pytest.raises(ValueError, match="hlo_op"):
        profile_step.summarize([{"ph": "X", "pid": 1, "tid": 1, "dur": 5.0, "name": "x"}], ops, 1)


def test_parse_hlo_reads_this_jax_programs_and_counts_their_dot_flops():
    """The installed XLA's own text: a matmul + tanh and a batched contraction, against the analytic count."""

    def f(a, b, c, d):
        return jnp.tanh(a @ b).sum() + jnp.einsum("bij,bjk->bik", c, d).sum()

    shapes = [(48, 40), (40, 24), (3, 8, 5), (3, 5, 7)]
    compiled = jax.jit(f).lower(*(jnp.ones(s) for s in shapes)).compile()
    ops = profile_step.parse_hlo(compiled.as_text())
    flops = profile_step.matmul_flops(ops)
    inner = profile_step._opcodes_by_computation(ops)
    # Count each dot once: the ops the runtime launches (not the dots inside their fusion bodies).
    called = {c for op in ops.values() for c in op.calls}
    launched = [
        op for op in ops.values()
        if op.computation not in called and profile_step.op_kind(op, op.name, inner) == "matmul"
    ]  # fmt: skip
    assert launched, "no matmul op found in the program's entry computation"
    assert sum(flops[op.name] for op in launched) == 2 * 48 * 40 * 24 + 2 * 3 * 8 * 5 * 7


def test_early_ending_dots_are_named_only_where_their_rate_is_implausible():
    """Plain `dot` ops whose events end before their work (XLA:CPU's Eigen products) claim a rate far
    above the matmul kind's; the note says so, with the sums, and stays silent for plausible rates."""

    def summary(dot_ms):
        ops = [
            {"op": "fusion.1", "opcode": "fusion", "kind": "matmul", "gflop": 6.0, "ms_per_step": 60.0,
             "runs_per_step": 1.0},
            {"op": "dot.2", "opcode": "dot", "kind": "matmul", "gflop": 6.0, "ms_per_step": dot_ms,
             "runs_per_step": 1.0},
            {"op": "add.3", "opcode": "add", "kind": "elementwise", "gflop": 0.0, "ms_per_step": 5.0,
             "runs_per_step": 1.0},
        ]  # fmt: skip
        kinds = [{"kind": "matmul", "ms_per_step": 60.0 + dot_ms, "gflop_per_step": 12.0}]
        return {"ops": ops, "kinds": kinds}

    # the dot at 1 ms: 6,000 GFLOP/s against the kind's 12 GFLOP / 61 ms = 197 GFLOP/s
    note = profile_step.early_ending_dots(summary(1.0))
    assert note is not None and "the 1 plain `dot` ops claim 6.0 GFLOP/step in 1.0 ms/step" in note
    assert "(6000 GFLOP/s, 30.5x the matmul kind's 197)" in note
    # the dot at 30 ms: 200 GFLOP/s against 133 for the kind: plausible, no note
    assert profile_step.early_ending_dots(summary(30.0)) is None
    assert profile_step.early_ending_dots({"ops": [], "kinds": []}) is None


# XLA:GPU's program as `compiled.as_text()` prints it, cut down: two cuBLAS calls (a product and its tuple
# with the workspace; the contracting dimensions in the backend_config) and a Triton-fused reduction.
GPU_HLO = """HloModule jit_train_step, entry_computation_layout={(bf16[96,64]{1,0})->f32[96]}

%fused_reduce (param_0: bf16[96,32]) -> f32[96] {
  %param_0 = bf16[96,32]{1,0} parameter(0)
  %convert.1 = f32[96,32]{1,0} convert(%param_0)
  %c = f32[] constant(0)
  ROOT %reduce.1 = f32[96]{0} reduce(%convert.1, %c), dimensions={1}, to_apply=%region_add
}

ENTRY %main.1 (x: bf16[96,64], w: bf16[32,64], v: bf16[32,48]) -> f32[96] {
  %x = bf16[96,64]{1,0} parameter(0)
  %w = bf16[32,64]{1,0} parameter(1)
  %v = bf16[32,48]{1,0} parameter(2)
  %custom-call.7 = (bf16[96,32]{1,0}, s8[4]{0}) custom-call(%x, %w), LT_MATMUL, GEMM_1
  %get-tuple-element.1 = bf16[96,32]{1,0} get-tuple-element(%custom-call.7), index=0
  %custom-call.8 = (bf16[64,48]{1,0}, s8[4]{0}) custom-call(%w, %v), GEMM, GEMM_0
  ROOT %input_reduce_fusion.12 = f32[96]{0} fusion(%get-tuple-element.1), kind=kInput, calls=%fused_reduce
}
"""
_GEMM = (
    'backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_batch_dimensions":[],'
    '"lhs_contracting_dimensions":["K"],"rhs_batch_dimensions":[],"rhs_contracting_dimensions":["K"]}}}'
)
GPU_HLO = (
    GPU_HLO.replace("GEMM_1", _GEMM.replace("K", "1"))
    .replace("GEMM_0", _GEMM.replace("K", "0"))
    .replace("LT_MATMUL", 'custom_call_target="__cublas$lt$matmul"')
    .replace("GEMM,", 'custom_call_target="__cublas$gemm",')
)


def test_gemm_calls_count_their_flops_from_the_backend_config():
    ops = profile_step.parse_hlo(GPU_HLO)
    call = ops["custom-call.7"]
    assert profile_step.is_gemm_call(call) and profile_step.is_gemm_call(ops["custom-call.8"])
    assert not profile_step.is_gemm_call(ops["input_reduce_fusion.12"])
    assert profile_step.dims(call.shape) == (96, 32)  # the product, not the workspace
    assert call.contracting == (1,) and ops["custom-call.8"].contracting == (0,)
    flops = profile_step.matmul_flops(ops)
    assert flops["custom-call.7"] == 2 * 96 * 32 * 64
    assert flops["custom-call.8"] == 2 * 64 * 48 * 32  # contracted over w's rows (32)
    assert flops["input_reduce_fusion.12"] == 0


# A program with control flow: a Triton block-level fusion, then a conditional whose branches move different
# bytes (XLA:GPU prints true_computation= / false_computation= for a boolean one).
COND_HLO = """HloModule jit_train_step, entry_computation_layout={(f32[1024,64]{1,0})->f32[1024,64]}

%fused_softmax (param_0: f32[1024,64]) -> bf16[1024,64] {
  %param_0 = f32[1024,64]{1,0} parameter(0)
  ROOT %convert.2 = bf16[1024,64]{1,0} convert(%param_0)
}

%fused_scale (param_0.2: f32[1024,64]) -> f32[1024,64] {
  %param_0.2 = f32[1024,64]{1,0} parameter(0)
  ROOT %multiply.3 = f32[1024,64]{1,0} multiply(%param_0.2, %param_0.2)
}

%apply (t: (f32[1024,64], f32[64])) -> f32[1024,64] {
  %t = (f32[1024,64]{1,0}, f32[64]{0}) parameter(0)
  %a = f32[1024,64]{1,0} get-tuple-element(%t), index=0
  %loop_multiply_fusion = f32[1024,64]{1,0} fusion(%a), kind=kLoop, calls=%fused_scale
  ROOT %copy.4 = f32[1024,64]{1,0} copy(%loop_multiply_fusion)
}

%skip (t.1: (f32[1024,64], f32[64])) -> f32[1024,64] {
  %t.1 = (f32[1024,64]{1,0}, f32[64]{0}) parameter(0)
  ROOT %b = f32[1024,64]{1,0} get-tuple-element(%t.1), index=0
}

ENTRY %main.7 (x: f32[1024,64], g: f32[64], ok: pred[]) -> f32[1024,64] {
  %x = f32[1024,64]{1,0} parameter(0)
  %g = f32[64]{0} parameter(1)
  %ok = pred[] parameter(2)
  %fusion.5 = bf16[1024,64]{1,0} fusion(%x), kind=kCustom, calls=%fused_softmax, TRITON
  %tuple.1 = (f32[1024,64]{1,0}, f32[64]{0}) tuple(%x, %g)
  ROOT %cond.1 = f32[1024,64]{1,0} conditional(%ok, %tuple.1, %tuple.1), true_computation=%apply, \
false_computation=%skip
}
""".replace(
    "TRITON",
    'backend_config={"fusion_backend_config":{"block_level_fusion_config":{"num_warps":"8","output_tiles":'
    '[{"sizes":["32","64"]}]},"kind":"__triton"}}',
).replace("\\\n", "")


def test_program_bytes_count_each_op_once_and_a_conditional_by_its_larger_branch():
    ops = profile_step.parse_hlo(COND_HLO)
    assert ops["cond.1"].calls == ("apply", "skip")
    assert ops["fusion.5"].backend_kind == "__triton" and ops["copy.4"].backend_kind == ""
    counted = profile_step.program_bytes(COND_HLO)
    f32, bf16 = 4 * 1024 * 64, 2 * 1024 * 64
    # the Triton fusion reads x (f32) and writes bf16; the taken branch squares x (read + write) and
    # copies it (read + write); the skip branch moves nothing; parameters and tuples move nothing
    assert counted["kinds"]["elementwise"]["gbytes"] == pytest.approx((f32 + bf16 + 2 * f32) / 1e9)
    assert counted["kinds"]["transpose/copy"]["gbytes"] == pytest.approx(2 * f32 / 1e9)
    assert counted["memory_bound_gbytes"] == pytest.approx((f32 + bf16 + 4 * f32) / 1e9)
    assert counted["triton"] == {"ops": 1, "gbytes": pytest.approx((f32 + bf16) / 1e9)}
    assert [row["op"] for row in counted["ops"]] == ["loop_multiply_fusion", "copy.4", "fusion.5"]
    with pytest.raises(ValueError, match="no ENTRY computation"):
        profile_step.program_bytes(COND_HLO.replace("ENTRY ", ""))


def test_program_bytes_of_a_gpu_program_count_its_gemm_calls_flops():
    counted = profile_step.program_bytes(GPU_HLO)
    assert counted["gflop"] == pytest.approx((2 * 96 * 32 * 64 + 2 * 64 * 48 * 32) / 1e9)
    assert counted["kinds"]["matmul"]["ops"] == 2
    assert counted["memory_bound_gbytes"] == pytest.approx((2 * 96 * 32 + 4 * 96) / 1e9)


def _kernel(name, dur, op, ts, scope):
    return {"ph": "X", "pid": 1, "tid": 2, "ts": ts, "dur": dur, "name": name,
            "args": {"hlo_op": op, "hlo_module": "jit_train_step", "scope_range_id": scope}}  # fmt: skip


def test_summarize_counts_a_cublas_call_once_though_it_launches_a_memset_too():
    ops = profile_step.parse_hlo(GPU_HLO)
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "Stream #14(Compute)"}},
    ]
    for step in range(2):  # per step: the call's memset and product (one scope), then the reduction
        t = 1000.0 * step
        events += [
            _kernel("Memset 3", 1.0, "custom-call.7", t, f"s{step}a"),
            _kernel("nvjet_sm90_tst_128x160", 99.0, "custom-call.7", t + 1, f"s{step}a"),
            _kernel("input_reduce_fusion_12", 20.0, "input_reduce_fusion.12", t + 100, f"s{step}b"),
        ]
    summary = profile_step.summarize(events, ops, steps=2, module_hint="train_step")
    rows = {row["op"]: row for row in summary["ops"]}
    assert rows["custom-call.7"]["runs_per_step"] == 1 and rows["custom-call.7"]["ms_per_step"] == 0.1
    kinds = {row["kind"]: row for row in summary["kinds"]}
    assert kinds["matmul"]["gflop_per_step"] == pytest.approx(2 * 96 * 32 * 64 / 1e9)
    assert kinds["reduction"]["ms_per_step"] == pytest.approx(0.02)


def test_summarize_gives_command_buffer_kernels_their_ops_back():
    """With command buffers (CUDA graphs) every kernel's hlo_op names the buffer; the kernel's name is its
    op's with "_" for the last "." and cuBLAS kernels name no op: they become one row with the FLOPs of
    the program's gemm calls, once per step."""
    ops = profile_step.parse_hlo(GPU_HLO)
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "Stream #14(Compute)"}},
    ]
    for step in range(3):  # one buffer run per step: both products' kernels and the reduction
        t, scope = 1000.0 * step, f"buffer{step}"
        events += [
            _kernel("nvjet_sm90_tst_128x160", 60.0, "command_buffer_1", t, scope),
            _kernel("sm90_xmma_gemm_bf16", 40.0, "command_buffer_1", t + 60, scope),
            _kernel("input_reduce_fusion_12", 30.0, "command_buffer_1", t + 100, scope),
        ]
    summary = profile_step.summarize(events, ops, steps=3, module_hint="train_step")
    rows = {row["op"]: row for row in summary["ops"]}
    assert set(rows) == {profile_step.LIBRARY_PRODUCTS, "input_reduce_fusion.12"}
    assert rows["input_reduce_fusion.12"]["kind"] == "reduction"
    assert rows["input_reduce_fusion.12"]["shape"] == "f32[96]{0}"  # found in the program
    products = rows[profile_step.LIBRARY_PRODUCTS]
    assert products["kind"] == "matmul" and products["ms_per_step"] == pytest.approx(0.1)
    kinds = {row["kind"]: row for row in summary["kinds"]}
    expected = (2 * 96 * 32 * 64 + 2 * 64 * 48 * 32) / 1e9
    assert kinds["matmul"]["gflop_per_step"] == pytest.approx(expected)
    assert summary["op_ms_per_step"] == pytest.approx(0.13)


def test_shape_bytes_count_every_array_of_a_shape():
    assert profile_step.shape_bytes("f32[256,196,512]{2,1,0}") == 4 * 256 * 196 * 512
    assert profile_step.shape_bytes("bf16[8,3]{1,0}") == 2 * 24
    assert profile_step.shape_bytes("(bf16[96,32]{1,0}, s8[4]{0}, f32[])") == 2 * 96 * 32 + 4 + 4
    assert profile_step.shape_bytes("pred[10]{0}") == 10 and profile_step.shape_bytes("s4[6]{0}") == 3


def test_op_bytes_are_the_distinct_operands_and_the_result():
    ops = profile_step.parse_hlo(GPU_HLO)
    # the reduction reads its bf16 [96, 32] operand and writes f32 [96]
    assert profile_step.op_bytes(ops["input_reduce_fusion.12"], ops) == 2 * 96 * 32 + 4 * 96
    # a cuBLAS call: its operands and its product, not its scratch space (the s8 tuple element)
    assert profile_step.op_bytes(ops["custom-call.7"], ops) == 2 * (96 * 64 + 32 * 64 + 96 * 32)
    cpu = profile_step.parse_hlo(HLO)
    assert cpu["sum"].operands == ("reduce.2", "reduce.2")
    assert profile_step.op_bytes(cpu["sum"], cpu) == 4 + 4  # an operand used twice is read once


def test_summarize_reports_bytes_per_op_and_kind():
    ops = profile_step.parse_hlo(GPU_HLO)
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "Stream #14(Compute)"}},
    ]
    for step in range(2):  # the reduction runs twice per step
        for k in range(2):
            start = 100.0 * (2 * step + k)
            events.append(
                _kernel("input_reduce_fusion_12", 10.0, "input_reduce_fusion.12", start, f"s{step}{k}")
            )
    summary = profile_step.summarize(events, ops, steps=2, module_hint="train_step")
    row = summary["ops"][0]
    assert row["runs_per_step"] == 2 and row["gbytes"] == pytest.approx((2 * 96 * 32 + 4 * 96) / 1e9)
    kinds = {k["kind"]: k for k in summary["kinds"]}
    assert kinds["reduction"]["gbytes_per_step"] == pytest.approx(2 * (2 * 96 * 32 + 4 * 96) / 1e9)


def test_reread_summarises_a_kept_trace_without_running(tmp_path, capsys):
    """--reread reads a --trace-dir's program text and its newest Perfetto trace, prints the tables
    (GB/s beside the times) and writes the JSON."""
    import gzip
    import json

    (tmp_path / "train_step.hlo.txt").write_text(GPU_HLO)
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "Stream #14(Compute)"}},
        _kernel("input_reduce_fusion_12", 1.0, "input_reduce_fusion.12", 0.0, "a"),
        _kernel("nvjet_sm90_tst", 4.0, "custom-call.7", 2.0, "b"),
    ]
    trace = tmp_path / "plugins" / "profile" / "run"
    trace.mkdir(parents=True)
    with gzip.open(trace / "perfetto_trace.json.gz", "wt") as handle:
        json.dump({"traceEvents": events}, handle)
    out = tmp_path / "reread.json"
    profile_step.main(["--reread", str(tmp_path), "--steps", "1", "--wall-ms", "0.01", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "wall 0.0 ms/step" in printed and "| GB/step | GB/s |" in printed
    # 6528 bytes read and written in 1 us: 6.5 GB/s in the reduction's row
    assert "| input_reduce_fusion.12 | reduction | 0.001 | 20.0% |  | 7 |" in printed
    record = json.loads(out.read_text())
    assert record["complete"] and record["steps"] == 1
    # the one gemm call with an event of its own (no command buffer: the other has none, so it is not counted)
    assert record["program_gflop_per_step"] == pytest.approx(2 * 96 * 32 * 64 / 1e9)
    with pytest.raises(SystemExit):
        profile_step.parse_args(["--reread", str(tmp_path / "plugins")])  # no program text there


def test_the_h200_profile_kept_in_the_repository_reads_as_measured(tmp_path):
    """The B=256 bf16 profile of 2026-12-04 (an H200; benchmarks/results/h200-2026-12-04/), its trace and
    compiled program kept compressed: read again, its products do the analytic count's FLOPs
    (common.model_flops, independent of the trace) and the totals are those RESULTS.md quotes."""
    import tarfile

    import common

    from motion_ddpm_jax import config as config_lib

    archive = Path(__file__).resolve().parents[1] / "benchmarks/results/h200-2026-12-04/profile_trace.tar.xz"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    folder = tmp_path / "profile_trace"
    ops = profile_step.parse_hlo((folder / "train_step.hlo.txt").read_text())
    summary = profile_step.summarize(profile_step.load_trace(folder), ops, steps=3, module_hint="train_step")
    kinds = {row["kind"]: row for row in summary["kinds"]}
    model = config_lib.base_config().model
    analytic = common.model_flops(256, 196, 264, 77, model)["train_step"] / 1e9
    assert kinds["matmul"]["gflop_per_step"] == pytest.approx(analytic, rel=1e-3)
    assert summary["busy_ms_per_step"] == pytest.approx(49.3, abs=0.05)
    memory_bound = [kinds[k] for k in ("reduction", "elementwise", "transpose/copy")]
    assert sum(k["gbytes_per_step"] for k in memory_bound) == pytest.approx(83.9, abs=0.05)
    assert sum(k["ms_per_step"] for k in memory_bound) == pytest.approx(34.8, abs=0.05)
    # Every op of that program ran once per step: the program read alone (gpu_program.py's count, no trace)
    # moves the same bytes, per kind, and its products do the analytic count's work.
    counted = profile_step.program_bytes((folder / "train_step.hlo.txt").read_text(), ops)
    for kind in ("reduction", "elementwise", "transpose/copy"):
        assert counted["kinds"][kind]["gbytes"] == pytest.approx(kinds[kind]["gbytes_per_step"], rel=1e-6)
    assert counted["gflop"] == pytest.approx(analytic, rel=1e-3)
