"""Where our train step's time goes: a profiled run of the jitted step, summarised per XLA op and per kind.

    .venv/bin/python benchmarks/profile_step.py [--batch 32] [--frames 196] [--features 264]
        [--dtype bfloat16|float32] [--steps 3] [--warmup 2] [--top 25] [--trace-dir DIR] [--json out.json]
        [--variant NAME]
    .venv/bin/python benchmarks/profile_step.py --reread DIR --steps N [--wall-ms MS] [--top 25]

The step is the one `bench_train_step.py` times (`train.make_train_step`, jitted with the state donated,
no bone-length term), so on a card the compilation comes from the same cache. After compiling and
`--warmup` steps it times `--steps` steps without the profiler (the wall time per step), then runs
`--steps` more under `jax.profiler.trace` and reads the Perfetto trace that jax writes (a gzipped Chrome
trace JSON: nothing beyond jax is needed to read it).

Every op event that names its XLA op (`args.hlo_op`) and belongs to the step's module is summed per op and
divided by the profiled steps (an op's runs counted once each: a cuBLAS call's memset and product are one
run; kernels that XLA:GPU ran inside a command buffer, a CUDA graph, get their own op back by kernel
name, the cuBLAS products among them one row that gets the FLOPs of the program's gemm calls); each op
gets a kind from the compiled program's text (`compiled.as_text()`): matmul (a dot or convolution, a
fusion around one, a gemm custom call), kernel (a hand-written one: Pallas), reduction, transpose/copy,
elementwise, collective, control flow (while/conditional/call bodies are counted through their own
ops), other. Tables: per kind (ms/step, share of the op time, op count) and the top `--top` ops
(ms/step, share, kind, result shape, GFLOP/s of the products, the jax op it came from), and where the
trace has them, the device's kernels by name.
"op time / wall" compares the summed op time with the step's wall time,
"busy" is the time at least one op was running (the union of their intervals): on a GPU, busy below
100% of wall means the device waited (launch overhead, host work); on a CPU, ops run on several threads
at once (op time above busy) and each op's time includes waiting for cores, so read CPU tables as a
rough split only. A plain `dot` op on a CPU (Eigen's float32 product) ends its event before its work is
done: it shows an impossible rate and the ops beside it a low one. A note after the tables says so
where it happens (`early_ending_dots`).

`--variant NAME` profiles a variant of `bench_variants.py` (a respelling of the model or XLA options,
e.g. `--variant attention=tokens-major --layers 2`) in place of the current step. `--reread DIR` prints
the tables of a trace kept earlier (`--trace-dir`), nothing run. Beside each op's time: its bytes (its
operands and result as the compiled program declares them, an upper bound per run) and GB/s.

`--trace-dir DIR` keeps the raw trace there (for https://ui.perfetto.dev) with the compiled program's
text (`train_step.hlo.txt`); by default the trace goes to a temporary directory that is removed.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_train_step  # noqa: I001 - first: it imports common, which sets the allocator before jax
import common
import jax

KINDS = ("matmul", "kernel", "reduction", "transpose/copy", "elementwise", "collective", "control", "other")
_COLLECTIVES = (
    "all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute", "send", "recv",
    "all-reduce-start", "all-reduce-done", "all-gather-start", "all-gather-done",
    "collective-permute-start", "collective-permute-done",
)  # fmt: skip
_MATMUL_OPCODES = ("dot", "convolution", "ragged-dot", "scaled-dot")
_ELEMENTWISE_OPCODES = (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "exponential", "log", "tanh", "sqrt",
    "rsqrt", "negate", "abs", "select", "compare", "convert", "broadcast", "power", "erf", "logistic",
    "and", "or", "not", "xor", "clamp", "sine", "cosine", "iota", "constant", "exponential-minus-one",
    "log-plus-one", "sign", "floor", "ceil", "round-nearest-even", "is-finite", "bitcast-convert",
    "shift-left", "shift-right-logical", "shift-right-arithmetic", "remainder", "atan2",
)  # fmt: skip

_TRANSCENDENTAL = {"exponential", "tanh", "log", "erf", "logistic"}
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.+?)\s+(?P<opcode>[a-z][a-z0-9\-]*)\((?P<rest>.*)$"
)


@dataclasses.dataclass(frozen=True)
class HloOp:
    """One instruction of the compiled program: its opcode, result shape, the computation it sits in, the
    computations it calls, its fusion kind and custom-call target ('' where none)."""

    name: str
    opcode: str
    shape: str
    computation: str
    calls: tuple[str, ...]
    fusion_kind: str
    target: str
    operands: tuple[str, ...] = ()
    source: str = ""  # the jax op it came from (metadata op_name): "jit(train_step)/.../query/dot_general"
    contracting: tuple[int, ...] = ()  # a dot's lhs contracting dimensions
    backend_kind: str = ""  # a GPU fusion's emitter: "__triton" (a block-level fusion), ... ('' where none)


def dims(shape: str) -> tuple[int, ...]:
    """The dimensions of an array shape as HLO prints it ("f32[32,196,512]{2,1,0}" -> (32, 196, 512)); of a
    tuple, its first array's (a cuBLAS call's "(bf16[768,256]{1,0}, s8[33554432]{0})": the product)."""
    match = re.match(r"\s*\(?\s*\w+\[([\d,]*)\]", shape)
    if not match:
        return ()
    return tuple(int(d) for d in match[1].split(",") if d)


# Bytes per element of HLO's array types (an f8 type: 1 byte; s4/u4: half).
_ITEM_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5,
}  # fmt: skip


def shape_bytes(shape: str) -> float:
    """The bytes of every array in an HLO shape ("f32[256,196,512]{2,1,0}": 4 x 256 x 196 x 512; a tuple's
    arrays summed; "f32[]": 4)."""
    total = 0.0
    for dtype, numbers in re.findall(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]", shape):
        size = 1
        for d in numbers.split(","):
            size *= int(d) if d else 1
        total += size * _ITEM_BYTES.get(dtype, 1.0 if dtype.startswith("f8") else 4.0)
    return total


def op_bytes(op: HloOp, ops: dict[str, HloOp]) -> float:
    """The bytes an op's run reads and writes at most: its distinct operands' arrays and its result's.
    An upper bound for the memory traffic of one run (a fusion may read only a slice or broadcast of an
    operand, and an in-place update writes less than its result); the floor below which an op that reads
    every operand and writes its result cannot go is the same count at the card's bandwidth."""
    operands = {name for name in op.operands if name in ops}
    # A library product's result is a tuple of the product and its scratch space, which it need not touch.
    first = re.search(r"\w+\[[\d,]*\]", op.shape)
    result = shape_bytes(first[0] if first and is_gemm_call(op) else op.shape)
    return result + sum(shape_bytes(ops[name].shape) for name in operands)


def _operand_names(rest: str) -> tuple[str, ...]:
    """The operand names of an instruction, from the text after its opcode's opening parenthesis."""
    depth, end = 1, len(rest)
    for i, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            end = i
            break
    return tuple(re.findall(r"%([\w.\-]+)", rest[:end]))


def parse_hlo(text: str) -> dict[str, HloOp]:
    """Every instruction of an HLO module's text (`compiled.as_text()`), by name."""
    ops: dict[str, HloOp] = {}
    computation = ""
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("(", 1)[0]:
            computation = header["name"]
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        rest = match["rest"]
        calls = re.findall(
            r"(?:calls|to_apply|body|condition|branch_computations|true_computation|false_computation)"
            r"=\{?%?([\w.\-]+)",
            rest,
        )
        calls += re.findall(r"branch_computations=\{([^}]*)\}", rest)
        names = tuple(c.strip().lstrip("%") for group in calls for c in group.split(",") if c.strip())
        kind = re.search(r"kind=(k\w+)", rest)
        target = re.search(r'custom_call_target="([^"]+)"', rest)
        source = re.search(r'op_name="([^"]*)"', rest)
        backend_kind = re.search(r'"kind":"(__\w+)"', rest)
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest) or re.search(
            r'"lhs_contracting_dimensions":\[([\d",]*)\]', rest
        )  # a dot's own, else a gemm custom call's (its backend_config: "lhs_contracting_dimensions":["1"])
        ops[match["name"]] = HloOp(
            name=match["name"],
            opcode=match["opcode"],
            shape=match["shape"].strip(),
            computation=computation,
            calls=names,
            fusion_kind=kind[1] if kind else "",
            target=target[1] if target else "",
            operands=_operand_names(rest),
            source=source[1] if source else "",
            contracting=tuple(int(d.strip('"')) for d in contracting[1].split(",") if d.strip('"'))
            if contracting
            else (),
            backend_kind=backend_kind[1] if backend_kind else "",
        )
    return ops


def dot_flops(op: HloOp, ops: dict[str, HloOp]) -> float:
    """2 x (output elements) x (contracted size) of a dot; 0 where an operand's shape is unknown."""
    lhs = ops.get(op.operands[0]) if op.operands else None
    if lhs is None:
        return 0.0
    lhs_dims = dims(lhs.shape)
    contracted = 1
    for d in op.contracting:
        contracted *= lhs_dims[d] if d < len(lhs_dims) else 1
    out = 1
    for d in dims(op.shape):
        out *= d
    return 2.0 * out * contracted


def is_gemm_call(op: HloOp) -> bool:
    """A custom call to a library product (XLA:GPU's "__cublas$gemm", "__cublas$lt$matmul", ...)."""
    return op.opcode == "custom-call" and any(k in op.target.lower() for k in ("gemm", "matmul"))


def matmul_flops(ops: dict[str, HloOp]) -> dict[str, float]:
    """Each instruction's dot FLOPs: its own if it is a dot, else those of the dots in what it calls."""
    by_computation: dict[str, list[HloOp]] = collections.defaultdict(list)
    for op in ops.values():
        by_computation[op.computation].append(op)
    memo: dict[str, float] = {}

    def computation_flops(name: str, seen: frozenset) -> float:
        if name in memo:
            return memo[name]
        total = sum(instruction_flops(op, seen | {name}) for op in by_computation.get(name, ()))
        memo[name] = total
        return total

    def instruction_flops(op: HloOp, seen: frozenset) -> float:
        if op.opcode == "dot" or is_gemm_call(op):
            return dot_flops(op, ops)
        if op.opcode == "fusion" or op.target:
            return sum(computation_flops(c, seen) for c in op.calls if c not in seen)
        return 0.0

    return {name: instruction_flops(op, frozenset()) for name, op in ops.items()}


def _opcodes_by_computation(ops: dict[str, HloOp]) -> dict[str, set[str]]:
    """Each computation's opcodes, including those of the computations it calls (fusion bodies)."""
    direct: dict[str, set[str]] = collections.defaultdict(set)
    calls: dict[str, set[str]] = collections.defaultdict(set)
    for op in ops.values():
        direct[op.computation].add(op.opcode)
        calls[op.computation].update(op.calls)
    closed: dict[str, set[str]] = {}

    def close(name: str, seen: frozenset = frozenset()) -> set[str]:
        if name in closed:
            return closed[name]
        found = set(direct.get(name, ()))
        for callee in calls.get(name, ()):
            if callee not in seen:
                found |= close(callee, seen | {name})
        closed[name] = found
        return found

    for name in list(direct):
        close(name)
    return closed


def op_kind(op: HloOp | None, event_name: str, inner: dict[str, set[str]]) -> str:
    """The kind of op (one of KINDS) of an event: from the compiled program where the op is known, else from
    the event's name (XLA names fusions after their content: loop_add_fusion, input_reduce_fusion, ...)."""
    if op is not None:
        opcodes = {op.opcode}
        for callee in op.calls:
            opcodes |= inner.get(callee, set())
        target = op.target.lower()
        if op.opcode in ("while", "conditional", "call") and op.fusion_kind == "":
            return "control"
        if opcodes & set(_MATMUL_OPCODES) or any(k in target for k in ("gemm", "matmul", "cublas", "dot")):
            return "matmul"
        if op.opcode == "custom-call" and any(k in target for k in ("triton", "pallas", "mosaic")):
            return "kernel"  # a hand-written kernel (Pallas): what it does is not in the program's text
        if op.opcode in _COLLECTIVES or opcodes & set(_COLLECTIVES):
            return "collective"
        if opcodes & {"reduce", "reduce-window", "scatter", "select-and-scatter", "sort"}:
            return "reduction"
        if op.opcode in ("copy", "transpose", "copy-start", "copy-done") or (
            op.opcode == "fusion" and opcodes & {"transpose", "copy"} and not opcodes & _TRANSCENDENTAL
        ):
            return "transpose/copy"
        if op.opcode == "fusion" or op.opcode in _ELEMENTWISE_OPCODES:
            return "elementwise"
        return "other"
    name = event_name.lower()
    for kind, keys in (
        ("matmul", ("gemm", "dot", "matmul", "cublas", "cutlass", "xmma", "conv")),
        ("collective", ("all-reduce", "all_reduce", "allreduce", "nccl", "all-gather")),
        ("reduction", ("reduce", "scatter")),
        ("transpose/copy", ("transpose", "copy")),
        ("elementwise", ("fusion", "loop_")),
    ):
        if any(key in name for key in keys):
            return kind
    return "other"


_BOOKKEEPING = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all", "partition-id",
                "replica-id"}  # fmt: skip
MEMORY_BOUND = ("reduction", "transpose/copy", "elementwise")


def program_bytes(text: str, ops: dict[str, HloOp] | None = None) -> dict:
    """The bytes each op of a compiled program (`compiled.as_text()`) reads and writes at most (`op_bytes`),
    summed per kind with the program run once: no trace needed, so it reads a program compiled for a
    device this machine does not have (gpu_program.py).

    The ENTRY computation's ops, and those of the computations its control flow calls: of a conditional,
    the branch that moves the most (the optimizer's update, not its skip); a while loop's body once (its
    trip count is not in the text). Bookkeeping ops (parameters, tuples, bitcasts) move nothing. Returns
    {"kinds": {kind: {"ops": n, "gbytes": GB}}, "gflop": the products' work, "memory_bound_gbytes": the
    reductions', transposes' and elementwise ops' sum, "triton": {"ops", "gbytes"} of those that XLA:GPU
    emits as Triton block-level fusions (backend kind "__triton"), "ops": [per op, most bytes first:
    op, kind, gbytes, gflop, shape, source, backend_kind]}."""
    ops = parse_hlo(text) if ops is None else ops
    entry = re.search(r"^ENTRY\s+%?([\w.\-]+)", text, re.M)
    if entry is None:
        raise ValueError("the program has no ENTRY computation: not the text of a compiled HLO module")
    inner = _opcodes_by_computation(ops)
    flops = matmul_flops(ops)
    by_computation: dict[str, list[HloOp]] = collections.defaultdict(list)
    for op in ops.values():
        by_computation[op.computation].append(op)

    def walk(computation: str, seen: frozenset) -> list[dict]:
        rows = []
        for op in by_computation.get(computation, ()):
            if op.opcode in _BOOKKEEPING:
                continue
            if op.opcode in ("while", "conditional", "call") and op.fusion_kind == "":
                branches = [walk(c, seen | {computation}) for c in op.calls if c not in seen]
                if op.opcode == "conditional" and branches:
                    rows += max(branches, key=lambda b: sum(row["gbytes"] for row in b))
                else:
                    rows += [row for branch in branches for row in branch]
                continue
            rows.append(
                {"op": op.name, "kind": op_kind(op, op.name, inner), "gbytes": op_bytes(op, ops) / 1e9,
                 "gflop": flops[op.name] / 1e9, "shape": op.shape, "source": short_source(op.source),
                 "backend_kind": op.backend_kind}
            )  # fmt: skip
        return rows

    rows = walk(entry[1], frozenset())
    kinds = {}
    for kind in KINDS:
        members = [row for row in rows if row["kind"] == kind]
        if members:
            kinds[kind] = {"ops": len(members), "gbytes": sum(row["gbytes"] for row in members)}
    bound = [row for row in rows if row["kind"] in MEMORY_BOUND]
    triton = [row for row in bound if row["backend_kind"] == "__triton"]
    return {
        "kinds": kinds,
        "gflop": sum(row["gflop"] for row in rows),
        "memory_bound_gbytes": sum(row["gbytes"] for row in bound),
        "triton": {"ops": len(triton), "gbytes": sum(row["gbytes"] for row in triton)},
        "ops": sorted(rows, key=lambda row: -row["gbytes"]),
    }


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of (start, end) intervals: the time at least one op was running."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def short_source(op_name: str) -> str:
    """A jax op name made short: "jit(train_step)/transpose(jvp(MotionTransformer))/MotionTransformer.denoise/
    layers_3/ffn/linear1/dot_general" -> "bwd denoise/layers_3/ffn/linear1/dot_general"."""
    parts = [p for p in op_name.split("/") if p]
    if parts and parts[0].startswith("jit("):
        parts = parts[1:]
    direction = ""
    if parts and parts[0].startswith(("transpose(", "jvp(")):
        direction = "bwd" if parts[0].startswith("transpose(") else "fwd"
        parts = parts[1:]
    parts = [p.split(".", 1)[1] if p.startswith("MotionTransformer.") else p for p in parts]
    return " ".join(x for x in (direction, "/".join(parts)) if x)


def load_trace(trace_dir: Path) -> list[dict]:
    """The events of the newest Perfetto trace jax wrote under trace_dir."""
    paths = sorted(trace_dir.rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir} (jax.profiler wrote none)")
    with gzip.open(paths[-1], "rt") as handle:
        data = json.load(handle)
    return data["traceEvents"] if isinstance(data, dict) else data


LIBRARY_PRODUCTS = "cuBLAS products (in command buffers)"
_LIBRARY_KERNELS = ("nvjet", "gemm", "cutlass", "xmma", "cublas", "gemv", "matmul")


def through_command_buffer(event: dict, ops: dict[str, HloOp]) -> dict:
    """The event with its own op. XLA:GPU runs stretches of the program as CUDA graphs ("command
    buffers", on by default): their kernels' events name the buffer (args.hlo_op "command_buffer_1",
    which is not in the program's text) and each kernel by its op's name with "_" for the last "."
    (fusion.7718 runs as kernel fusion_7718). Such an event gets that op back where the program has it; a
    library product's kernel (cuBLAS: nvjet_*, sm90_xmma_*, ...) is named LIBRARY_PRODUCTS; any other
    kernel keeps its own name (and is classified by it)."""
    op_name = event["args"]["hlo_op"]
    if op_name in ops or not op_name.startswith("command_buffer"):
        return event
    kernel = event.get("name", "")
    for name in (re.sub(r"_(\d+)$", r".\1", kernel), kernel):
        if name in ops:
            break
    else:
        name = LIBRARY_PRODUCTS if any(k in kernel.lower() for k in _LIBRARY_KERNELS) else kernel
    return {**event, "args": {**event["args"], "hlo_op": name, "in_command_buffer": True}}


def summarize(events: list[dict], ops: dict[str, HloOp], steps: int, module_hint: str = "") -> dict:
    """Op time per op, per kind and per device kernel, in ms per step, from a trace's complete events.

    Op events are those with `args.hlo_op` (where none has one: the device's events, by name, each op
    then classified by its name); of the modules they name, the one whose name contains
    `module_hint` (else the one with the most time) is the step. Where the trace has a thread named
    "XLA Ops" (a GPU's per-op line beside its per-stream kernels), only that thread is counted, so that a
    kernel is not counted twice. Kernels run inside command buffers get their ops back by name
    (`through_command_buffer`); the library products among them, whose kernels name no op, make one row,
    LIBRARY_PRODUCTS, credited with the FLOPs of the program's gemm calls that have no events of their
    own (each counted once per step)."""
    names = {}
    threads = {}
    for event in events:
        if event.get("ph") == "M" and event.get("name") == "process_name":
            names[event["pid"]] = event.get("args", {}).get("name", "")
        if event.get("ph") == "M" and event.get("name") == "thread_name":
            threads[(event["pid"], event["tid"])] = event.get("args", {}).get("name", "")
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    device_pids = {pid for pid, name in names.items() if "gpu" in name.lower() or "/device:" in name.lower()}
    tagged = [e for e in complete if e.get("args", {}).get("hlo_op")]
    if not tagged:  # a trace whose kernels do not name their ops: the device's kernels, by name
        tagged = [
            {**e, "args": {**e.get("args", {}), "hlo_op": e["name"], "hlo_module": ""}}
            for e in complete
            if e["pid"] in device_pids
        ]
    op_threads = {key for key, name in threads.items() if name.strip().lower() == "xla ops"}
    if op_threads and any((e["pid"], e["tid"]) in op_threads for e in tagged):
        tagged = [e for e in tagged if (e["pid"], e["tid"]) in op_threads]
    tagged = [through_command_buffer(e, ops) for e in tagged]
    per_module: dict[str, float] = collections.Counter()
    for event in tagged:
        per_module[event["args"].get("hlo_module", "")] += float(event["dur"])
    if not per_module:
        raise ValueError("the trace has no op events (no event carries args.hlo_op) and no device events")
    hinted = [m for m in per_module if module_hint and module_hint in m]
    module = max(hinted or per_module, key=per_module.get)
    inner = _opcodes_by_computation(ops)
    flops = matmul_flops(ops)
    per_op: dict[str, dict] = {}
    intervals = []
    for event in tagged:
        if event["args"].get("hlo_module", "") != module:
            continue
        name = event["args"]["hlo_op"]
        entry = per_op.setdefault(name, {"op": name, "us": 0.0, "runs": set()})
        entry["us"] += float(event["dur"])
        # One run of an op may launch several kernels (a cuBLAS call: a memset and the product), which
        # share the run's scope_range_id; inside a command buffer the scope is the buffer's: each kernel
        # is a run there.
        scope = event["args"].get("scope_range_id")
        entry["runs"].add(scope if scope and not event["args"].get("in_command_buffer") else len(intervals))
        intervals.append((float(event.get("ts", 0.0)), float(event.get("ts", 0.0)) + float(event["dur"])))
    if LIBRARY_PRODUCTS in per_op:  # the gemm calls that ran inside command buffers, once per step each
        hidden = [name for name, op in ops.items() if is_gemm_call(op) and name not in per_op]
        flops[LIBRARY_PRODUCTS] = (
            sum(flops[name] for name in hidden) * steps / len(per_op[LIBRARY_PRODUCTS]["runs"])
        )
    kinds_of = {name: op_kind(ops.get(name), name, inner) for name in per_op}
    # A while/conditional/call event spans its body's ops, which have events of their own.
    total_us = sum(entry["us"] for name, entry in per_op.items() if kinds_of[name] != "control")
    rows = []
    for name, entry in per_op.items():
        op = ops.get(name)
        rows.append(
            {
                "op": name,
                "kind": kinds_of[name],
                "ms_per_step": entry["us"] / 1e3 / steps,
                "share": entry["us"] / total_us if total_us and kinds_of[name] != "control" else 0.0,
                "runs_per_step": len(entry["runs"]) / steps,
                "opcode": op.opcode if op else "",
                "shape": op.shape if op else "",
                "source": short_source(op.source) if op else "",
                "gflop": flops.get(name, 0.0) / 1e9,
                "gbytes": op_bytes(op, ops) / 1e9 if op else 0.0,
            }
        )
    rows.sort(key=lambda row: -row["ms_per_step"])
    kinds = []
    for kind in KINDS:
        members = [row for row in rows if row["kind"] == kind]
        if members:
            kinds.append(
                {
                    "kind": kind,
                    "ms_per_step": sum(row["ms_per_step"] for row in members),
                    "share": sum(row["share"] for row in members),
                    "ops": len(members),
                    "gflop_per_step": sum(row["gflop"] * row["runs_per_step"] for row in members),
                    "gbytes_per_step": sum(row["gbytes"] * row["runs_per_step"] for row in members),
                }
            )
    kernels: dict[str, float] = collections.Counter()
    for event in complete:
        if event["pid"] in device_pids and (event["pid"], event["tid"]) not in op_threads:
            if "stream" in threads.get((event["pid"], event["tid"]), "").lower():
                kernels[event["name"]] += float(event["dur"])
    kernel_rows = [{"kernel": name, "ms_per_step": us / 1e3 / steps} for name, us in kernels.most_common()]
    return {
        "module": module,
        "modules_us": dict(per_module),
        "op_ms_per_step": total_us / 1e3 / steps,
        "busy_ms_per_step": busy_us(intervals) / 1e3 / steps,
        "ops": rows,
        "kinds": kinds,
        "kernels": kernel_rows,
        "matched_ops": sum(1 for row in rows if row["opcode"]),
    }


def early_ending_dots(summary: dict, factor: float = 3.0) -> str | None:
    """A note when the profile's plain `dot` ops (not fusions) claim a matmul rate above `factor` times
    that of the profile's matmul ops as a whole: XLA:CPU hands such a dot (Eigen's product) to its
    thread pool and ends the op's event before the work is done, so the work lands in the ops that run
    beside it. Seen in float32 steps on the CPU (benchmarks/RESULTS.md, AMD EPYC section): kernel
    gradients at ~1 ms and 1-36 TFLOP/s, the input gradients beside them at half their rate."""
    dots = [
        row for row in summary["ops"] if row["opcode"] == "dot" and row["gflop"] > 0 and row["ms_per_step"]
    ]
    matmul = next((row for row in summary["kinds"] if row["kind"] == "matmul"), None)
    if not dots or not matmul or not matmul["ms_per_step"]:
        return None
    dot_ms = sum(row["ms_per_step"] for row in dots)
    dot_gflop = sum(row["gflop"] * row["runs_per_step"] for row in dots)
    overall = matmul["gflop_per_step"] / (matmul["ms_per_step"] / 1e3)
    claimed = dot_gflop / (dot_ms / 1e3)
    if claimed <= factor * overall:
        return None
    return (
        f"note: the {len(dots)} plain `dot` ops claim {dot_gflop:.1f} GFLOP/step in {dot_ms:.1f} ms/step "
        f"({claimed:.0f} GFLOP/s, {claimed / overall:.1f}x the matmul kind's {overall:.0f}): their events "
        "end before their work does (on a CPU, Eigen's product runs on the thread pool), so that work is "
        "counted in the ops beside them. Read per-op rates in pairs; the kind's total rate stands."
    )


def print_summary(summary: dict, wall_s: float | None, top: int) -> None:
    """The tables; `wall_s` (the step's wall time) None where unknown (`--reread` without `--wall-ms`)."""
    op_ms, busy_ms = summary["op_ms_per_step"], summary["busy_ms_per_step"]
    if wall_s:
        wall_ms = wall_s * 1e3
        times = (
            f"wall {wall_ms:.1f} ms/step, op time {op_ms:.1f} ms/step (op time / wall "
            f"{op_ms / wall_ms:.0%}), busy {busy_ms:.1f} ms/step (some op running: "
            f"{busy_ms / wall_ms:.0%} of wall)"
        )
    else:
        times = f"op time {op_ms:.1f} ms/step, busy {busy_ms:.1f} ms/step"
    print(
        f"module {summary['module']}: {times}, {len(summary['ops'])} ops "
        f"({summary['matched_ops']} found in the compiled program)"
    )
    print(
        "\n| kind | ms/step | share of op time | ops | GFLOP/step | GFLOP/s | GB/step | GB/s |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    for row in summary["kinds"]:
        share = f"{row['share']:.1%}" if row["kind"] != "control" else "(spans its bodies' ops; not summed)"
        seconds = row["ms_per_step"] / 1e3
        gflop, gbytes = row["gflop_per_step"], row.get("gbytes_per_step", 0.0)
        rate = f"{gflop:.1f} | {gflop / seconds:.1f}" if gflop and seconds else " | "
        traffic = (
            f"{gbytes:.2f} | {gbytes / seconds:.0f}"
            if gbytes and seconds and row["kind"] != "control"
            else " | "
        )
        print(f"| {row['kind']} | {row['ms_per_step']:.2f} | {share} | {row['ops']} | {rate} | {traffic} |")
    print(
        "(GB: each op's operands and result at most, per run; GB/s: those bytes over the op's time, where "
        "XLA's fusion is memory-bound the rate to set against the device's bandwidth)"
    )
    print(f"\n| top {top} ops | kind | ms/step | share | GFLOP/s | GB/s | shape | from |")
    print("|---|---|---|---|---|---|---|---|")
    for row in summary["ops"][:top]:
        shape = row["shape"] if len(row["shape"]) <= 40 else row["shape"][:37] + "..."
        ms = row["ms_per_step"] / max(row["runs_per_step"], 1e-9)
        rate = f"{row['gflop'] / (ms / 1e3):.1f}" if row["gflop"] and ms else ""
        traffic = f"{row.get('gbytes', 0.0) / (ms / 1e3):.0f}" if row.get("gbytes") and ms else ""
        events = f" ({row['runs_per_step']:g}x)" if row["runs_per_step"] != 1 else ""
        print(
            f"| {row['op']}{events} | {row['kind']} | {row['ms_per_step']:.3f} | {row['share']:.1%} | "
            f"{rate} | {traffic} | {shape} | {row['source'][-70:]} |"
        )
    note = early_ending_dots(summary)
    if note:
        print(f"\n{note}")
    if summary["kernels"]:
        print(f"\n| top {top} device kernels | ms/step |\n|---|---|")
        for row in summary["kernels"][:top]:
            name = row["kernel"] if len(row["kernel"]) <= 90 else row["kernel"][:87] + "..."
            print(f"| {name} | {row['ms_per_step']:.3f} |")


def parse_args(argv=None):
    parser = common.step_parser(__doc__)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="",
                        help="compute dtype (default: bfloat16 on a GPU, float32 on a CPU)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3, help="steps timed, then as many profiled")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace-dir", type=Path, default=None, help="keep the raw trace here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--reread", type=Path, default=None,
                        help="summarise a kept --trace-dir (its trace and train_step.hlo.txt) without "
                        "running anything; --steps: the steps it profiled")  # fmt: skip
    parser.add_argument("--wall-ms", type=float, default=0.0, help="with --reread: the step's wall time")
    parser.add_argument("--variant", default="current",
                        help="profile this variant of bench_variants.py (a spelling, several joined by '+', "
                        "or xla:NAME=VALUE) instead of the current step")  # fmt: skip
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.variant != "current":
        import bench_variants

        try:
            bench_variants.check_variant(args.variant)
        except ValueError as error:
            parser.error(f"--variant: {error}")
    if args.reread is not None:
        if not (args.reread / "train_step.hlo.txt").is_file():
            parser.error(
                f"--reread {args.reread}: no train_step.hlo.txt there (a --trace-dir of this script)"
            )
        return args
    if args.trace_dir is not None and args.trace_dir.exists() and any(args.trace_dir.iterdir()):
        parser.error(f"--trace-dir {args.trace_dir} is not empty: give a new or empty directory")
    return args


def reread(args) -> None:
    """The tables of a kept trace (`--trace-dir` of an earlier run), read again by this version."""
    ops = parse_hlo((args.reread / "train_step.hlo.txt").read_text())
    summary = summarize(load_trace(args.reread), ops, args.steps, module_hint="train_step")
    program = sum(row["gflop_per_step"] for row in summary["kinds"])
    print(f"{args.reread}: {args.steps} profiled steps; matmul work {program:.1f} GFLOP/step")
    wall_s = args.wall_ms / 1e3 or None
    print_summary(summary, wall_s, args.top)
    record = {"benchmark": "profile_step", "reread": str(args.reread), "steps": args.steps,
              "wall_median_s": wall_s, "program_gflop_per_step": program, "complete": True}  # fmt: skip
    record.update(summary)
    common.write_json(args.json, record)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.reread is not None:
        return reread(args)
    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    machine = common.machine_info()
    record = {"benchmark": "profile_step", "machine": machine, "args": vars(args) | {"dtype": dtype},
              "complete": False}  # fmt: skip
    record["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in record["args"].items()}
    step = bench_train_step.OurStep(args, args.features)
    import bench_variants  # here: it is not needed to --reread

    compiled, compile_s = bench_variants.compile_variant(step, args.variant, dtype)
    print(f"compiled in {compile_s:.1f} s on {jax.devices()[0].device_kind}", file=sys.stderr)
    run = step.runner(compiled)
    wall = common.time_repeats(run, args.steps, warmup=args.warmup + 1)
    wall_s = statistics.median(wall)
    hlo = compiled.as_text()
    ops = parse_hlo(hlo)
    if args.trace_dir is not None:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
        (args.trace_dir / "train_step.hlo.txt").write_text(hlo)
    with tempfile.TemporaryDirectory(prefix="profile_step_") as scratch:
        trace_dir = args.trace_dir or Path(scratch)
        start = time.perf_counter()
        with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            for _ in range(args.steps):
                run()
        profiled_s = (time.perf_counter() - start) / args.steps
        summary = summarize(load_trace(trace_dir), ops, args.steps, module_hint="train_step")
    analytic = common.model_flops(args.batch, args.frames, args.features, args.text_length, step.config.model)
    program = sum(row["gflop_per_step"] for row in summary["kinds"])
    print(
        f"matmul work: {program:.2f} GFLOP/step in the program's products (dots, their fusions, gemm "
        f"calls), {analytic['train_step'] / 1e9:.2f} by the analytic count (common.model_flops)"
    )
    print_summary(summary, wall_s, args.top)
    record.update(
        complete=True,
        dtype=dtype,
        compile_s=compile_s,
        wall_s=wall,
        wall_median_s=wall_s,
        profiled_s_per_step=profiled_s,
        program_gflop_per_step=program,
        analytic_gflop_per_step=analytic["train_step"] / 1e9,
        **summary,
    )
    common.write_json(args.json, record)


if __name__ == "__main__":
    main()
