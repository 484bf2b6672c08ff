r"""A step's recurrent product as one compiled float32 kernel: ``C (N, B) = W (N, K) @ hT (K, B)``.

Why not BLAS. A recurrent step multiplies the same weight ``W`` (the LSTM's 4H x P, 16 MB at the
paper's H = 1024) by a new, thin ``hT`` (B = 64 columns) T times in a row. A BLAS GEMM repacks
``W`` into its panel layout on every call: SciPy's OpenBLAS does the 4096 x 1024 x 64 product in
1.7-2.2 ms on the 2 cores here (250-310 GFLOP/s, native AVX-512 kernel), while its large square
products reach 400-415. And the BLAS numba does not use, MKL, picks a non-AVX-512 path on this AMD
CPU: 105-141 GFLOP/s for the same product, packed API (``cblas_sgemm_compute``) included.

This kernel needs no packing, because the product is thin: ``hT`` (K x B, 256 KB) stays in L2
and ``W`` is read once, row by row, in the order it is stored. Each tile of ``R = 6`` rows of ``C``
keeps its 6 x B results in registers (``B/16`` vectors of 16 floats per row: 24 of the 32 AVX-512
registers at B = 64) and runs down ``k``: per ``k`` it loads the B-wide row ``hT[k]`` (``B/16``
vector loads) and broadcasts one element of each of the 6 rows of ``W``, then does ``6 * B/16``
fused multiply-adds. Rows are split between the threads (a ``prange``); every element of ``C`` is
one chain of FMAs in increasing ``k``, whatever the split, so the result does not depend on the
thread count. Measured, 4096 x 1024 x 64: 2.33-2.40 ms on one core (223-231 GFLOP/s, about 88% of
a core's 64 FLOP/cycle) and 1.19-1.34 ms on two (400-452 GFLOP/s).

The price of a second thread pool. The kernel's threads are numba's, not BLAS's. After a BLAS call
OpenBLAS's worker threads keep spinning for about 0.1 s, and a forward through this kernel started in
that time shares the cores with them: at the paper's LSTM size 133-157 ms right after a 3200 x 1024
x 1024 GEMM, 83 ms once 0.1 s has passed, against 112-127 ms for the BLAS forward either way (the
same pool). So a loop that puts BLAS work between inference forwards gains less or loses up to
~15%; back-to-back forwards gain the full 1.3-1.5x. Handing out the tasks one by one (an atomic
count) instead of numba's fixed shares did not help (133 ms after the GEMM). For the same reason a
training step goes one way as a whole: the LSTM's (:mod:`refrnn.jit.lstm`), where this rule holds,
makes its backward's products here too (:func:`gemm` for the weight gradients and ``dx``), and never
calls BLAS; the GRU's keeps BLAS throughout.

Without AVX-512 the same IR is generated for AVX2's 16 registers of 8 floats: 6 rows by two
vectors, panels of 16 columns (see VEC below). ``hT`` still comes in multiples of 16 columns.
The rows left after the last full tile go through one smaller tile, not one at a time.

The kernel is written in LLVM IR (generated below for each width ``B/16`` = 1..4 with AVX-512;
wider ``hT`` goes through it in panels of 64 columns), compiled once per process into a numba code library and
linked into every function that calls :func:`product` (so numba's on-disk cache holds it too). It
takes float32 C-ordered arrays with ``B`` a multiple of 16; :func:`applies` is the rule the
forwards follow, and they keep BLAS for everything else (float64, other batches, small weights).
All steps' input products at once (the "batched" order) have a wide ``hT`` instead, and go through
:func:`gemm`, the same kernel over blocks of ``hT`` copied to a contiguous buffer; made by
:func:`product`, they had slowed an LSTM forward with D = H = 1024 to twice BLAS's time.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._cache import njit


def _host_has(feature: str) -> bool:
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get(feature, False))


LANES = 16  # the unit of width the kernel takes: columns of hT come in multiples of 16
# The register tile, by what the CPU has. AVX-512 (32 registers of 16 floats): 6 rows x 4 vectors =
# 24 accumulators + 4 loaded vectors + 1 broadcast, panels of 64 columns. Otherwise AVX2's 16
# registers of 8 floats: 6 rows x 2 vectors = 12 accumulators + 2 + 1, panels of 16 columns.
# Measured on one Zen 3 core, 6 x 1024 x 32: 66-88 GFLOP/s with this tile; 3 rows x 4 vectors (32
# columns a panel) spills to the stack, 37-40; the 16-lane tile, 37.
VEC = 16 if _host_has("avx512f") else 8  # float32 lanes of one register
ROWS = 6  # rows of C per tile of the widest panel


def tile_rows(nv: int) -> int:
    """Rows of C per tile of a panel ``16 nv`` columns wide. With AVX-512, 8 for the narrow panels
    (one or two vectors: 8 or 16 accumulators), so that a product of up to 8 rows against a narrow
    weight makes one pass over the weight, not a 6-row pass and a second one for the rest (gathered
    rows go up to :func:`one_pass_rows` in one pass); 6 for three and four vectors (18, 24).
    Measured on 2 cores, 64 blocks of 1024 x 32 weights (8 MB, read from L3 at about 55 GB/s)
    against n gathered rows each, us a step: n = 8 204-236 -> 190, n = 64 1003-1020 against
    1026-1075 (noise); 9 or 10 rows, or 12 rows of two vectors, made n = 64 40-70% slower. With
    AVX2's 16 registers, ROWS."""
    return (8 if nv <= 2 else ROWS) if VEC == 16 else ROWS


_NARROW_TILE = tile_rows(1)  # tile_rows(nv) for nv <= 2, inside njit code; ROWS for the wider panels


def one_pass_rows(nv: int, gathered: bool) -> int:
    """Most rows of C that a narrow panel (one or two vectors) takes in one pass when they are
    gathered: one tile of exactly that many rows, 14 with AVX-512 (28 accumulators, the 2 loaded
    vectors and the broadcast fill the 32 registers); otherwise, and for more rows, tiles of
    :func:`tile_rows`. The conditional GRU's block products stream each block's weight from L3 once
    against the few samples whose block is active, binomially many (64 samples at z-density 0.1 have
    9 to 14 in a fifth of the blocks), and with 8-row tiles those blocks had paid a second pass for
    the rows past 8. Measured on 2 cores, 32 blocks of 1024 x 64 (8 MB) against binomial(64, 0.105)
    rows, us a step (medians): 143.5 with 8-row tiles, 126.9 with this; the block forward at
    z-density 0.10 (B = 64, H = 1024, 3 alternating processes each way, medians, ms) bs = 16 14.5-15.5
    -> 13.9-14.5, bs = 32 12.3-13.9 -> 12.0-12.8. At 64 rows 14-row tiles were slower (984 against
    802 us a step), so more rows keep the 8-row tiles. The strided kernel keeps tile_rows: its row
    chunks are whole tiles of that height (:func:`_chunk`)."""
    return 14 if gathered and VEC == 16 and nv <= 2 else tile_rows(nv)


PANEL = 4 * VEC if VEC == 16 else LANES  # the widest hT the kernel takes at once; wider ones go in panels
UNROLL = 4  # k steps per loop iteration
# Row chunks of a product: numba's prange gives each thread an equal run of consecutive tasks, so 24
# splits evenly over 1, 2, 3, 4, 6, 8 or 12 threads. (Asking numba for its thread count inside the
# kernel would be a run-time address, which numba's on-disk cache refuses to store.)
CHUNKS = 24
# Depth of one pass over a tile's rows: about KBLOCK rows of hT (256 KB at B = 64) stay in L2 while
# every tile of the task reads them; deeper products go in equal blocks of about that depth (1051 in
# one, 4096 in four), each later block added onto C. Measured at 1024 x 4096 x 64: one pass over
# all 4096 rows of hT (1 MB, the whole L2) 1.66 ms (324 GFLOP/s), four passes 1.33 ms (402).
KBLOCK = 1024
_NAME = "refrnn_rowcast_f32"


def _tile(R: int, nv: int, gathered: bool = False) -> str:
    """IR of ``tile_R_nv(A, lda, B, ldb, C, ldc, K, add)``: C[r, :16nv] = sum_k A[r*lda + k] * B[k*ldb : +16nv]
    for r < R, added onto C's values when ``add``; K >= 0 (K = 0 writes zeros, or leaves C).
    ``gathered``: ``gtile_R_nv(A, rows, B, ...)``, whose row r of A starts at A + rows[r] (``rows``
    i64 offsets in elements) instead of A + r*lda: rows picked from a matrix without copying them."""
    vec = f"<{VEC} x float>"
    nq = nv * (LANES // VEC)  # vectors across the tile's 16nv columns
    acc = [(r, v) for r in range(R) for v in range(nq)]
    name, rows_arg = (f"gtile_{R}_{nv}", "ptr %rows") if gathered else (f"tile_{R}_{nv}", "i64 %lda")
    out = [f"define internal void @{name}(ptr %A, {rows_arg}, ptr %B, i64 %ldb, ptr %C, i64 %ldc, i64 %K, i1 %add) alwaysinline {{",
           "entry:"]
    for r in range(R):  # where each row of A starts
        if gathered:
            out += [f"  %rp_{r} = getelementptr i64, ptr %rows, i64 {r}", f"  %ro_{r} = load i64, ptr %rp_{r}, align 8"]
        else:
            out.append(f"  %ro_{r} = mul i64 %lda, {r}")
    out += ["  br i1 %add, label %load, label %start", "load:"]
    for r, v in acc:  # accumulate onto C (a later block of k) rather than from zero
        out += [f"  %lo_{r}_{v} = mul i64 %ldc, {r}", f"  %lv_{r}_{v} = add i64 %lo_{r}_{v}, {VEC * v}",
                f"  %lp_{r}_{v} = getelementptr float, ptr %C, i64 %lv_{r}_{v}", f"  %l_{r}_{v} = load {vec}, ptr %lp_{r}_{v}, align 4"]
    out += ["  br label %start", "start:"]
    out += [f"  %i_{r}_{v} = phi {vec} [%l_{r}_{v}, %load], [zeroinitializer, %entry]" for r, v in acc]
    out += [f"  %Ku = and i64 %K, {-UNROLL}", "  %hasu = icmp ne i64 %Ku, 0",
            "  br i1 %hasu, label %loop, label %tail0", "loop:", "  %k = phi i64 [0, %start], [%kn, %loop]"]
    out += [f"  %c_{r}_{v} = phi {vec} [%i_{r}_{v}, %start], [%u{UNROLL - 1}_{r}_{v}, %loop]" for r, v in acc]

    def step(tag, k, prev):
        """One k: the B-row's vectors, each A-row's broadcast, the FMAs; returns the new accumulators."""
        lines = [f"  %bo{tag} = mul i64 {k}, %ldb"]
        for v in range(nq):
            lines += [f"  %bo{tag}_{v} = add i64 %bo{tag}, {VEC * v}",
                      f"  %bp{tag}_{v} = getelementptr float, ptr %B, i64 %bo{tag}_{v}",
                      f"  %b{tag}_{v} = load {vec}, ptr %bp{tag}_{v}, align 4"]
        new = {}
        for r in range(R):
            lines += [f"  %ao{tag}_{r} = add i64 %ro_{r}, {k}",
                      f"  %ap{tag}_{r} = getelementptr float, ptr %A, i64 %ao{tag}_{r}",
                      f"  %a{tag}_{r} = load float, ptr %ap{tag}_{r}, align 4",
                      f"  %ai{tag}_{r} = insertelement {vec} poison, float %a{tag}_{r}, i32 0",
                      f"  %ab{tag}_{r} = shufflevector {vec} %ai{tag}_{r}, {vec} poison, <{VEC} x i32> zeroinitializer"]
            for v in range(nq):
                new[r, v] = f"%u{tag}_{r}_{v}"
                lines.append(f"  {new[r, v]} = call {vec} @llvm.fma.v{VEC}f32({vec} %ab{tag}_{r}, {vec} %b{tag}_{v}, {vec} {prev[r, v]})")
        return lines, new

    prev = {rv: f"%c_{rv[0]}_{rv[1]}" for rv in acc}
    for u in range(UNROLL):
        out.append(f"  %k{u} = add i64 %k, {u}")
        lines, prev = step(u, f"%k{u}", prev)
        out += lines
    out += [f"  %kn = add i64 %k, {UNROLL}", "  %more = icmp ult i64 %kn, %Ku", "  br i1 %more, label %loop, label %tail0",
            "tail0:", "  %kt0 = phi i64 [0, %start], [%kn, %loop]"]
    out += [f"  %d_{r}_{v} = phi {vec} [%i_{r}_{v}, %start], [%u{UNROLL - 1}_{r}_{v}, %loop]" for r, v in acc]
    out += ["  %anyt = icmp ult i64 %kt0, %K", "  br i1 %anyt, label %tail, label %store",
            "tail:", "  %kt = phi i64 [%kt0, %tail0], [%ktn, %tail]"]
    out += [f"  %e_{r}_{v} = phi {vec} [%d_{r}_{v}, %tail0], [%ut_{r}_{v}, %tail]" for r, v in acc]
    lines, _ = step("t", "%kt", {rv: f"%e_{rv[0]}_{rv[1]}" for rv in acc})
    out += lines
    out += ["  %ktn = add i64 %kt, 1", "  %tmore = icmp ult i64 %ktn, %K", "  br i1 %tmore, label %tail, label %store", "store:"]
    out += [f"  %s_{r}_{v} = phi {vec} [%d_{r}_{v}, %tail0], [%ut_{r}_{v}, %tail]" for r, v in acc]
    for r, v in acc:
        out += [f"  %so_{r}_{v} = mul i64 %ldc, {r}", f"  %sv_{r}_{v} = add i64 %so_{r}_{v}, {VEC * v}",
                f"  %sp_{r}_{v} = getelementptr float, ptr %C, i64 %sv_{r}_{v}",
                f"  store {vec} %s_{r}_{v}, ptr %sp_{r}_{v}, align 4"]
    return "\n".join(out + ["  ret void", "}"])


def _row_args(i: str, v: str, gathered: bool) -> tuple[list[str], str]:
    """IR lines and the two leading tile arguments for the tile whose first row is ``i``: A at row
    i and ``lda`` (A + i*lda), or A itself and the offsets from row i on (``gathered``)."""
    if gathered:
        return [f"  {v}rp = getelementptr i64, ptr %rows, i64 {i}"], f"ptr %A, ptr {v}rp"
    return [f"  {v}ao = mul i64 {i}, %lda", f"  {v}ap = getelementptr float, ptr %A, i64 {v}ao"], f"ptr {v}ap, i64 %lda"


def _row_loop(label: str, start: str, came_from: str, limit: str, step: int, tile: str, then: str, gathered: bool) -> str:
    """IR of the block ``label``: rows i = start, start + step, ... below ``limit``, ``tile`` on each."""
    v = f"%{label}_"
    lines, a_args = _row_args(f"{v}i", v, gathered)
    body = "\n".join(lines)
    return f"""{label}:
  {v}i = phi i64 [{start}, %{came_from}], [{v}next, %{label}]
{body}
  {v}co = mul i64 {v}i, %ldc
  {v}cp = getelementptr float, ptr %C, i64 {v}co
  call void @{tile}({a_args}, ptr %B, i64 %ldb, ptr {v}cp, i64 %ldc, i64 %K, i1 %add)
  {v}next = add i64 {v}i, {step}
  {v}more = icmp ult i64 {v}next, {limit}
  br i1 {v}more, label %{label}, label %{then}
"""


def _rows_of(nv: int, gathered: bool = False) -> str:
    """IR of ``rows_nv``: rows [r0, r1) of C, in tiles of R = ``tile_rows(nv)``, the last ``(r1 - r0) % R`` as one
    smaller tile (a few gathered rows are a common product here: one row at a time keeps only
    a row's few chains of FMAs going, a quarter of the rate or less). ``gathered``: ``grows_nv``,
    A's rows at the offsets ``rows`` (see :func:`_tile`); a span of up to :func:`one_pass_rows` of
    them goes straight to that last tile, of exactly its height."""
    R = tile_rows(nv)
    one = one_pass_rows(nv, gathered)
    last = max(R - 1, one)  # the tallest tile the rest takes: R - 1 after the R-row tiles, or a whole short span
    g = "g" if gathered else ""
    rest_lines, rest_args = _row_args("%j0", "%r", gathered)
    rest = "\n".join(f"left{r}:\n  call void @{g}tile_{r}_{nv}({rest_args}, ptr %B, i64 %ldb, ptr %rcp, i64 %ldc, i64 %K, i1 %add)\n"
                     "  br label %done" for r in range(1, last + 1))
    cases = " ".join(f"i64 {r}, label %left{r}" for r in range(1, last + 1))
    rows_arg = "ptr %rows" if gathered else "i64 %lda"
    rest_body = "\n".join(rest_lines)
    if one > R:  # a span of up to `one` rows skips the R-row tiles: the rest takes it as one tile
        start, head, short = (f"  %few = icmp ule i64 %span, {one}\n  br i1 %few, label %rest, label %many\nmany:",
                              "many", " [%r0, %entry],")
    else:
        start, head, short = "", "entry", ""
    return f"""
define internal void @{g}rows_{nv}(ptr %A, {rows_arg}, ptr %B, i64 %ldb, ptr %C, i64 %ldc, i64 %r0, i64 %r1, i64 %K, i1 %add) {{
entry:
  %span = sub i64 %r1, %r0
{start}
  %nt = udiv i64 %span, {R}
  %tend = mul i64 %nt, {R}
  %tlim = add i64 %r0, %tend
  %any = icmp ult i64 %r0, %tlim
  br i1 %any, label %tiles, label %rest
{_row_loop("tiles", "%r0", head, "%tlim", R, f"{g}tile_{R}_{nv}", "rest", gathered)}rest:
  %j0 = phi i64{short} [%r0, %{head}], [%tlim, %tiles]
  %left = sub i64 %r1, %j0
{rest_body}
  %rco = mul i64 %j0, %ldc
  %rcp = getelementptr float, ptr %C, i64 %rco
  switch i64 %left, label %done [ {cases} ]
{rest}
done:
  ret void
}}
"""


def module_ir() -> str:
    """The whole module: tiles and row loops for widths 1..4 and the two entry points (A's rows at
    a stride, and at gathered offsets), which take ``nv`` = (columns of the panel) / 16 and dispatch."""
    widths = range(1, PANEL // LANES + 1)
    parts = [f"declare <{VEC} x float> @llvm.fma.v{VEC}f32(<{VEC} x float>, <{VEC} x float>, <{VEC} x float>)"]
    for gathered in (False, True):
        for nv in widths:
            tallest = max(tile_rows(nv), one_pass_rows(nv, gathered))
            parts += [_tile(r, nv, gathered) for r in range(1, tallest + 1)] + [_rows_of(nv, gathered)]
        g, rows_arg = ("g", "ptr %rows") if gathered else ("", "i64 %lda")
        cases = " ".join(f"i64 {nv}, label %w{nv}" for nv in widths)
        body = "\n".join(f"w{nv}:\n  call void @{g}rows_{nv}(ptr %A, {rows_arg}, ptr %B, i64 %ldb, ptr %C, i64 %ldc, i64 %r0, i64 %r1, i64 %K, i1 %add)\n"
                         "  br label %done" for nv in widths)
        parts.append(f"""
define void @{_NAME}{"_gathered" if gathered else ""}(ptr %A, {rows_arg}, ptr %B, i64 %ldb, ptr %C, i64 %ldc, i64 %nv, i64 %r0, i64 %r1, i64 %K, i64 %addf) {{
entry:
  %add = icmp ne i64 %addf, 0
  switch i64 %nv, label %done [ {cases} ]
{body}
done:
  ret void
}}""")
    return "\n".join(parts)


# numba's thread pool, started now rather than at the first parallel call. Every kernel that may call
# product() carries its parallel launch in its machine code; numba restarts the pool when it loads
# such a kernel from its on-disk cache only if the kernel was compiled together with product(), not
# when product() itself had come from the cache (measured: a segmentation fault on the next load).
numba.get_num_threads()

_LIBRARY = []  # the compiled code library, built on first use (one per process)


def _library(context):
    if not _LIBRARY:
        import llvmlite.binding as llvm

        library = context.codegen().create_library("refrnn_rowcast")
        module = llvm.parse_assembly(module_ir())
        module.verify()
        library.add_llvm_module(module)
        library.finalize()
        _LIBRARY.append(library)
    return _LIBRARY[0]


def _is_f32_c_matrix(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32 and a.layout == "C"


@intrinsic
def _panel_rows(typingctx, W, hT, out, jb, jc, nv, r0, r1, kw, kb, depth, add):
    """Rows [r0, r1) of out[:, jc : jc + 16nv] (+)= W[:, kw : kw + depth] @ hT[kb : kb + depth, jb : jb
    + 16nv], added onto ``out`` when ``add``; float32 C-ordered arrays. (The two column offsets and the
    two depth offsets differ where ``hT`` is a packed block of a wider operand: see :func:`gemm`.)"""
    if not (_is_f32_c_matrix(W) and _is_f32_c_matrix(hT) and _is_f32_c_matrix(out)):
        return None

    def codegen(context, builder, signature, args):
        W_v, hT_v, out_v, jb_v, jc_v, nv_v, r0_v, r1_v, kw_v, kb_v, depth_v, add_v = args
        i64, ptr = ir.IntType(64), ir.PointerType(ir.FloatType())
        fnty = ir.FunctionType(ir.VoidType(), [ptr, i64, ptr, i64, ptr, i64, i64, i64, i64, i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _NAME)
        context.active_code_library.add_linking_library(_library(context))
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args[:3], (W_v, hT_v, out_v))]
        (_, K), (_, ldb), (_, ldc) = (cgutils.unpack_tuple(builder, a.shape, 2) for a in arrays)
        A, Bp, C = (a.data for a in arrays)
        A = builder.gep(A, [kw_v])  # W C-ordered: row stride K, the block's first column kw
        Bp = builder.gep(Bp, [builder.add(builder.mul(kb_v, ldb), jb_v)])  # row kb of the panel
        C = builder.gep(C, [jc_v])
        add = builder.zext(add_v, i64)
        builder.call(fn, [A, K, Bp, ldb, C, ldc, nv_v, r0_v, r1_v, depth_v, add])
        return context.get_dummy_value()

    sig = types.void(W, hT, out, *[types.int64] * 8, types.boolean)
    return sig, codegen


def _is_i64_vector(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.int64 and a.layout == "C"


@intrinsic
def _panel_rows_gathered(typingctx, a, offsets, hT, out, jb, jc, nv, r0, r1, kw, kb, depth, add):
    """:func:`_panel_rows` with row i of the left operand at ``offsets[i]`` elements into ``a`` (its
    rows picked in place): rows [r0, r1) of out[:, jc : jc + 16nv] (+)= A[:, kw : kw + depth] @
    hT[kb : kb + depth, jb : jb + 16nv]."""
    if not (_is_f32_c_matrix(a) and _is_i64_vector(offsets) and _is_f32_c_matrix(hT) and _is_f32_c_matrix(out)):
        return None

    def codegen(context, builder, signature, args):
        a_v, off_v, hT_v, out_v, jb_v, jc_v, nv_v, r0_v, r1_v, kw_v, kb_v, depth_v, add_v = args
        i64, ptr = ir.IntType(64), ir.PointerType(ir.FloatType())
        fnty = ir.FunctionType(ir.VoidType(), [ptr, ir.PointerType(i64), ptr, i64, ptr, i64, i64, i64, i64, i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _NAME + "_gathered")
        context.active_code_library.add_linking_library(_library(context))
        types_ = signature.args
        A, rows, Bm, C = (context.make_array(t)(context, builder, v) for t, v in
                          zip((types_[0], types_[1], types_[2], types_[3]), (a_v, off_v, hT_v, out_v)))
        (_, ldb), (_, ldc) = (cgutils.unpack_tuple(builder, m.shape, 2) for m in (Bm, C))
        Ap = builder.gep(A.data, [kw_v])  # every row's block of k starts kw further in
        Bp = builder.gep(Bm.data, [builder.add(builder.mul(kb_v, ldb), jb_v)])
        Cp = builder.gep(C.data, [jc_v])
        builder.call(fn, [Ap, rows.data, Bp, ldb, Cp, ldc, nv_v, r0_v, r1_v, depth_v, builder.zext(add_v, i64)])
        return context.get_dummy_value()

    sig = types.void(a, offsets, hT, out, *[types.int64] * 8, types.boolean)
    return sig, codegen


@njit(cache=True)
def serial_gathered(a, offsets, hT, out):
    """``out (n, N) = A @ hT`` on the calling thread, row i of A being the row of ``a`` (M, K) that
    starts ``offsets[i]`` elements into it (a multiple of K below M K, the caller's to keep so):
    :func:`serial` over rows picked from ``a`` in place, the same bits as over their copies. For a
    product over the samples a block of the conditional GRU has active (a copy of each row had
    cost as much as a fifth of the products)."""
    n, N = out.shape
    K = a.shape[1]
    if N % LANES or offsets.shape[0] != n or hT.shape[1] != N or hT.shape[0] != K:
        raise ValueError("rowcast.serial_gathered: expected a (M, K), offsets (n,), hT (K, N), out (n, N) with N a multiple of 16")
    depth = _depth(K)
    for j0 in range(0, N, PANEL):
        nv = min(PANEL, N - j0) // LANES
        for k0 in range(0, max(K, 1), depth):  # K = 0 still writes the zeros
            _panel_rows_gathered(a, offsets, hT, out, j0, j0, nv, 0, n, k0, k0, min(K, k0 + depth) - k0, k0 > 0)


def serial_gathered_into(a, offsets, hT, out):
    """:func:`serial_gathered` inside njit code, for float32 operands; any other dtype raises (a
    kernel that takes it only at run time then still compiles for float64)."""
    raise NotImplementedError("refrnn.jit._rowcast.serial_gathered_into is callable from numba-compiled code only")


@overload(serial_gathered_into)
def _serial_gathered_into_impl(a, offsets, hT, out):
    if _float32_operands(a, hT, out) and a.layout == "C":
        return lambda a, offsets, hT, out: serial_gathered(a, offsets, hT, out)

    def refuse(a, offsets, hT, out):
        raise ValueError("rowcast.serial_gathered_into: float32 operands only")
    return refuse


# Where the forward takes this kernel, as measured (float32 forward_inference, 2 cores, native BLAS
# kernel, 3 alternating processes each way, medians in ms, BLAS -> this kernel): T=50 B=64 H=1024
# (the paper's) LSTM 107-121 -> 78-84, GRU 81-86 -> 58-67; B=48 H=768 LSTM 54-66 -> 41-44; B=128
# H=512 LSTM 57-61 -> 47-53; B=16 H=512 LSTM 22-28 -> 20-24. With the 8-lane tile smaller weights
# keep BLAS. With AVX-512, once the products' row chunks were spread evenly over the threads and the
# element-wise passes split by rows (refrnn.jit._kernels.pass_tasks), the kernel won down to a
# weight of 48K elements (2 cores, T=100, float32, medians, BLAS -> kernel; a training step of two
# calls, then forward_inference): LSTM B=32 D=H=256 train 108 -> 84 ms (torch autograd 93),
# inference 19.6 -> 14.9; H=128 38 -> 31 and 7.7 -> 6.0; GRU B=32 H=256 83 -> 67 and 13.3 -> 11.0;
# H=128 (3H * H = 49152) 31 -> 25 and 6.1 -> 5.3; B=16 H=256 LSTM 61 -> 48, GRU 44 -> 40. At H=64 the
# two were even (LSTM 16.9 -> 13.7-20.6 ms, GRU 14.3 -> 12.9).
MIN_WEIGHT = 1 << 20  # elements of the recurrent weight W_h (4 MB in float32), with the 8-lane tile
MIN_WEIGHT_AVX512 = 3 << 14  # with the 16-lane tile: 49152, the GRU's 3H * H at H = 128


def _has_avx512() -> bool:
    """Whether the 16-lane tile runs here (the rule below was first measured with it)."""
    return VEC == 16


def min_weight() -> int:
    """The smallest recurrent weight (elements) whose forwards run here, by the tile this CPU takes."""
    return MIN_WEIGHT_AVX512 if _has_avx512() else MIN_WEIGHT


def applies(dtype, rows: int, weight_size: int, input_size: int = 0, state_size: int = 1) -> bool:
    """Whether a forward's step products run here: float32, a positive multiple of 16 rows (the
    batch), a weight of at least :func:`min_weight` elements; with AVX-512 always, with the 8-lane tile only
    for an input narrow next to the state, ``4 D <= P`` (``input_size`` D, ``state_size`` P). All of
    a forward's products go one way, so that its step loop never alternates between numba's threads
    and BLAS's (two pools on two cores slow each other down many times over).

    The 8-lane rule as measured (2 Zen 3 cores, AVX2, forward_inference T=50 B=64, medians in ms,
    BLAS -> this kernel): D=27 LSTM H=512 114 -> 101, H=768 247 -> 201, H=1024 471 -> 352 (torch.nn.LSTM
    310); GRU H=768 188 -> 157, H=1024 357 -> 285; D=256 H=1024 LSTM 566 -> 442, GRU 331 -> 311. With
    D = H the input products through :func:`gemm` (panels of 16 columns there) cost what the steps
    gain or more: LSTM H=512 155 -> 191, H=1024 695 -> 728, GRU H=1024 499 -> 566."""
    return (np.dtype(dtype) == np.float32 and rows >= LANES and rows % LANES == 0 and weight_size >= min_weight()
            and (_has_avx512() or 4 * input_size <= state_size))


def matmul(a, b):
    """``a (M, K) @ b (K, N)`` by :func:`gemm`, for N a multiple of 16 (a step loop's input
    products, so that the loop never switches to BLAS's threads: see the callers). ``b`` may be a
    transposed view: gemm copies it block by block anyway."""
    if b.shape[1] % LANES:
        raise ValueError(f"b: expected a multiple of {LANES} columns, got shape {b.shape}")
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    gemm(np.ascontiguousarray(a), b, out)
    return out


@njit(cache=True, parallel=True)
def product(W, hT, out):
    """out (N, B) = W (N, K) @ hT (K, B), float32, every array C-ordered, B a multiple of 16.

    Tasks: the rows of ``out`` in CHUNKS chunks of whole tiles (:func:`_chunk`) times the panels of
    64 columns; the parallel loop only calls the kernel."""
    N, B = out.shape
    if B % LANES or W.shape[0] != N or hT.shape[1] != B or hT.shape[0] != W.shape[1]:
        raise ValueError("rowcast.product: expected W (N, K), hT (K, B), out (N, B) with B a multiple of 16")
    panels = -(-B // PANEL)
    for task in prange(CHUNKS * panels):
        _task(W, hT, out, task, panels)


@njit(cache=True)
def _chunk(c, M, nv):
    """Rows ``[r0, r1)`` of chunk ``c`` of the CHUNKS chunks of M rows, for a panel of ``nv`` vectors:
    whole tiles of that panel's height, as evenly spread as they go (the chunks' counts differ by one
    tile at most), so that every thread's run of consecutive chunks has its share of the rows. (Fixed
    chunks of ceil(M / CHUNKS) rows had left 1024 rows split 576 : 448 between two threads.)"""
    R = _NARROW_TILE if nv <= 2 else ROWS  # tile_rows(nv)
    tiles = -(-M // R)
    return min(M, (c * tiles // CHUNKS) * R), min(M, ((c + 1) * tiles // CHUNKS) * R)


@njit(cache=True)
def _span(N, B, task, panels):
    """``(j0, r0, r1)`` of a task of :func:`product`: the first column of its panel, its rows."""
    c, p = task // panels, task % panels
    j0 = p * PANEL
    r0, r1 = _chunk(c, N, min(PANEL, B - j0) // LANES)
    return j0, r0, r1


@njit(cache=True)
def _task(W, hT, out, task, panels):
    """One task of :func:`product`: its rows of one panel."""
    j0, r0, r1 = _span(out.shape[0], out.shape[1], task, panels)
    if r0 < r1:
        _rows(W, hT, out, j0, r0, r1)


@njit(cache=True)
def _depth(K):
    """The depth of each block of k a product of depth K goes in: blocks of about KBLOCK, all alike."""
    return max(1, -(-K // max(1, (K + KBLOCK // 2) // KBLOCK)))


@njit(cache=True)
def _rows(W, hT, out, j0, r0, r1, add=False):
    """Rows [r0, r1) of the panel of ``out`` that starts at column j0, over k in blocks of KBLOCK,
    added onto ``out`` when ``add``."""
    K = W.shape[1]
    nv = min(PANEL, out.shape[1] - j0) // LANES
    depth = _depth(K)
    for k0 in range(0, max(K, 1), depth):  # K = 0 still writes the zeros
        _panel_rows(W, hT, out, j0, j0, nv, r0, r1, k0, k0, min(K, k0 + depth) - k0, add or k0 > 0)


@njit(cache=True, parallel=True)
def product_pair(W1, h1T, W2, h2T, out):
    """out (N, B) = W1 (N, K1) @ h1T (K1, B) + W2 (N, K2) @ h2T (K2, B), the tasks of :func:`product`:
    the product of the side-by-side weights ``[W1 | W2]`` and the stacked operand, bit for bit (each
    element is the same one chain of fused multiply-adds, the K1 terms then the K2), without building
    either. (A step of the LSTM's "fused" order, ``[x_t | h_{t-1}]``, with W_x and W_h where they are.)"""
    N, B = out.shape
    if (B % LANES or W1.shape[0] != N or W2.shape[0] != N or h1T.shape[1] != B or h2T.shape[1] != B
            or h1T.shape[0] != W1.shape[1] or h2T.shape[0] != W2.shape[1]):
        raise ValueError("rowcast.product_pair: expected W1 (N, K1), h1T (K1, B), W2 (N, K2), h2T (K2, B), out (N, B), B a multiple of 16")
    panels = -(-B // PANEL)
    first = W1.shape[1] > 0
    for task in prange(CHUNKS * panels):
        j0, r0, r1 = _span(N, B, task, panels)
        if r0 < r1:
            if first:
                _rows(W1, h1T, out, j0, r0, r1)
            _rows(W2, h2T, out, j0, r0, r1, first)


@njit(cache=True)
def serial(W, hT, out):
    """:func:`product` on the calling thread alone: for small products made inside a parallel loop
    (a few gathered rows times one tile's weights), where BLAS would pack ``hT`` on every call
    (measured on one Zen 3 core, 6 x 1024 x 32: 4-5 us against 34-39 through OpenBLAS)."""
    N, B = out.shape
    if B % LANES or W.shape[0] != N or hT.shape[1] != B or hT.shape[0] != W.shape[1]:
        raise ValueError("rowcast.serial: expected W (N, K), hT (K, B), out (N, B) with B a multiple of 16")
    for j0 in range(0, B, PANEL):
        _rows(W, hT, out, j0, 0, N)


def into(W, hT, out):
    """``out = W @ hT`` inside njit code: :func:`product` for float32 operands (``W`` made C-ordered
    if it is not), BLAS for any other dtype, so that a kernel with a run-time choice of product
    compiles for every dtype. The forwards ask for it only where :func:`applies` holds."""
    raise NotImplementedError("refrnn.jit._rowcast.into is callable from numba-compiled code only")


def _float32_operands(W, hT, out) -> bool:
    return all(isinstance(a, types.Array) and a.dtype == types.float32 for a in (W, hT, out)) and hT.layout == out.layout == "C"


@overload(into)
def _into_impl(W, hT, out):
    if _float32_operands(W, hT, out):
        return lambda W, hT, out: product(np.ascontiguousarray(W), hT, out)
    return lambda W, hT, out: np.dot(W, hT, out)


def takes(W, hT):
    """Inside njit code: whether :func:`into_serial` multiplies ``W @ hT`` with the kernel (float32,
    ``hT`` C-ordered and a multiple of 16 wide), so that a caller can size its row chunks for it."""
    raise NotImplementedError("refrnn.jit._rowcast.takes is callable from numba-compiled code only")


@overload(takes)
def _takes_impl(W, hT):
    if _float32_operands(W, hT, hT):
        return lambda W, hT: hT.shape[1] % LANES == 0
    return lambda W, hT: False


def into_serial(W, hT, out):
    """``out = W @ hT`` inside njit code, on the calling thread: :func:`serial` for float32 operands
    whose width is a multiple of 16, BLAS otherwise (other dtypes, other widths)."""
    raise NotImplementedError("refrnn.jit._rowcast.into_serial is callable from numba-compiled code only")


@overload(into_serial)
def _into_serial_impl(W, hT, out):
    if _float32_operands(W, hT, out):
        def impl(W, hT, out):
            if out.shape[1] % LANES == 0:
                serial(np.ascontiguousarray(W), hT, out)
            else:
                np.dot(W, hT, out)
        return impl
    return lambda W, hT, out: np.dot(W, hT, out)


# Where a training backward's step product ``rec (B, P) = da_t (B, 4H) @ W_h (4H, P)`` goes through
# :func:`packed` over ``W_h`` packed once per backward, rather than through :func:`product` as
# ``W_h.T @ da_t.T`` (which needs W_h transposed once and ``da_t`` and the result transposed every
# step). With the 8-lane tile, whose panels are 16 columns wide, :func:`product` also takes ``da_t.T``
# (K = 4H = 4096 deep at the paper's size, 1 MB) in four panels, reading ``W_h.T`` four times a step.
# Measured, 64 x 4096 -> 1024 on 2 cores: Zen 3 (8 lanes) 4.6-4.7 ms through :func:`product`, 3.2-3.3
# through :func:`packed`; AVX-512 Xeon (16 lanes, one 64-column panel) 2.23 against 1.90 ms. The
# whole backward at T=50 B=64 D=27 H=1024, medians of interleaved runs: 326 -> 203 ms (the loop
# alone, Zen 3) and 290 -> 261 ms (all of it, Xeon). Packing (a strided copy) replaces the
# transpose of W_h the backward made otherwise and costs about as much (28 against 33 ms, Xeon).
def packs_step_weight(width: int) -> bool:
    """Whether a training backward's step product of ``width`` output columns (P), which the caller
    has put on this kernel, takes :func:`packed` (see above): the one rule."""
    return width % LANES == 0


def panels_shape(K: int, N: int) -> tuple[int, int, int]:
    """The shape of :func:`panels` of a (K, N) operand."""
    return -(-N // PANEL), K, PANEL


def panels(b, out=None):
    """``b`` (K, N), float32, N a multiple of 16, as the panels :func:`packed` reads: an array (n, K,
    PANEL) whose panel ``p`` is columns ``[p * PANEL, (p + 1) * PANEL)`` of ``b``, C-ordered, the last
    one zero-padded where N is not a multiple of PANEL. ``b`` may be any layout (a transposed view).
    ``out``: that array to fill (any contents), else a new one."""
    K, N = b.shape
    if N % LANES:
        raise ValueError(f"b: expected a multiple of {LANES} columns, got shape {b.shape}")
    shape = panels_shape(K, N)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out: expected a C-ordered float32 array of shape {shape}, got {out.dtype} {out.shape}")
    _pack(b, out)
    return out


@njit(cache=True, parallel=True)
def _pack(b, out):
    K, N = b.shape
    for p in prange(out.shape[0]):
        j0 = p * PANEL
        w = min(PANEL, N - j0)
        panel = out[p]
        for k in range(K):
            row = b[k]
            for j in range(w):
                panel[k, j] = row[j0 + j]
            for j in range(w, PANEL):
                panel[k, j] = 0.0


@njit(cache=True, parallel=True)
def packed(a, bp, out):
    """out (M, N) = a (M, K) @ b (K, N), float32, ``a`` and ``out`` C-ordered, ``bp`` = ``panels(b)``.

    The same tiles as :func:`product` with the roles turned: rows of ``out`` are rows of ``a`` (a few,
    the batch), and the vectors run along ``b``'s columns, one contiguous panel of ``b`` at a time, so
    that ``b`` (the weight) is read once, in order, and ``out`` comes in the row layout the caller
    keeps (no transposes). Tasks: the panels; each runs every row of ``a`` down its panel in K blocks
    of about KBLOCK, the later blocks added onto ``out``: each element is still one chain of fused
    multiply-adds in increasing k, whatever the thread count."""
    M, N = out.shape
    K = a.shape[1]
    if N % LANES or a.shape[0] != M or bp.shape[1] != K or bp.shape[2] != PANEL or bp.shape[0] != -(-N // PANEL):
        raise ValueError("rowcast.packed: expected a (M, K), bp = panels of b (K, N), out (M, N) with N a multiple of 16")
    depth = _depth(K)
    for p in prange(bp.shape[0]):
        j0 = p * PANEL
        nv = min(PANEL, N - j0) // LANES
        for k0 in range(0, max(K, 1), depth):  # K = 0 still writes the zeros
            _panel_rows(a, bp[p], out, 0, j0, nv, 0, M, k0, k0, min(K, k0 + depth) - k0, k0 > 0)


def packed_into(a, bp, out):
    """:func:`packed` inside njit code, for float32 operands; any other dtype raises (a kernel that
    takes the packed product only at run time then still compiles for float64)."""
    raise NotImplementedError("refrnn.jit._rowcast.packed_into is callable from numba-compiled code only")


@overload(packed_into)
def _packed_into_impl(a, bp, out):
    if _float32_operands(a, a, out) and isinstance(bp, types.Array) and bp.dtype == types.float32 and bp.layout == "C":
        return lambda a, bp, out: packed(a, bp, out)

    def refuse(a, bp, out):
        raise ValueError("rowcast.packed_into: float32 operands only")
    return refuse


# Blocks of a wide product (see gemm): GEMM_K rows by GEMM_N columns of b, 256 KB in float32, copied
# into a contiguous buffer that stays in L2 while every row of a passes over it. Measured (2 cores, a
# noisy day: the thin product ran at about 250 GFLOP/s), 3200 x 1024 x 4096 and 512 x 3200 x 1024 at
# 16 block shapes from 128 x 64 to 1024 x 512: 180-215 GFLOP/s for most, no shape clearly ahead.
GEMM_K = 512
GEMM_N = 128


@njit(cache=True, parallel=True)
def gemm(a, b, out):
    """out (M, N) = a (M, K) @ b (K, N), float32, ``a`` and ``out`` C-ordered (``b`` any layout), N a
    multiple of 16: a product with a wide ``b`` (all steps' input products at once, a training
    step's weight gradients).

    :func:`product` suits a thin ``hT``: it reads its ``W`` once per 64-column panel of ``hT``, and
    ``hT`` with its own row stride. For a wide one both cost more than the multiply-adds: all steps'
    input products at T*B = 3200, D = H = 1024 took 367 ms that way against BLAS's 118 (a row stride
    of 16 KB puts every row of a panel in the same few cache sets, and the 13 MB ``a`` is read 64
    times). Here ``b`` goes in blocks of GEMM_K x GEMM_N, each copied to a contiguous buffer first,
    and every row of ``a`` passes over a block while it is in L2: 147 ms that day. Each element of
    ``out`` is still one chain of fused multiply-adds in increasing k, whatever the thread count."""
    M, N = out.shape
    K = a.shape[1]
    if N % LANES or a.shape[0] != M or b.shape[1] != N or b.shape[0] != K:
        raise ValueError("rowcast.gemm: expected a (M, K), b (K, N), out (M, N) with N a multiple of 16")
    if K == 0:
        out[:] = 0.0
        return
    buf = np.empty(min(K, GEMM_K) * min(N, GEMM_N), np.float32)
    for k0 in range(0, K, GEMM_K):
        kd = min(K, k0 + GEMM_K) - k0
        for n0 in range(0, N, GEMM_N):
            nd = min(N, n0 + GEMM_N) - n0
            packed = buf[: kd * nd].reshape(kd, nd)
            for k in prange(kd):
                packed[k] = b[k0 + k, n0 : n0 + nd]
            for c in prange(CHUNKS):
                r0, r1 = _chunk(c, M, min(PANEL, nd) // LANES)
                if r0 < r1:
                    for j in range(0, nd, PANEL):
                        nv = min(PANEL, nd - j) // LANES
                        _panel_rows(a, packed, out, j, n0 + j, nv, r0, r1, k0, 0, kd, k0 > 0)
