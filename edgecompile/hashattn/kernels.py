"""The packed-code kernels of binary-hash attention, and their numpy reference.

Codes are ``b <= 31`` sign bits packed in one int32 word per token (bit ``t`` set: ``h_t = +1``).
With ``h`` in ``{-1, +1}^b``, a key-padding flag ``keep_j`` in ``{0, 1}`` and the constant ``c``:

- :func:`context_kernel`, per group (head): ``S1[t] = sum_{j kept, bit t of k_j} v_j``,
  ``Sv = sum_{j kept} v_j``, counts alike; out ``C[t] = 2 S1[t] - Sv`` (``= sum_j h_jt v_j``),
  ``C[b] = c Sv`` and ``z[t] = 2 n1[t] - n``, ``z[b] = c n``: additions only (a token's value row
  is added to the rows of its set bits).
- :func:`output_kernel`, per query ``i``: ``o_i = (C[b] + sum_t +-C[t]) / (z[b] + sum_t +-z[t])``,
  the sign from bit ``t`` of ``q_i``: additions and subtractions of context rows, one reciprocal
  per query and a multiply by it per element. That is ``sum_j (h_i . h_j + c) v_j / sum_j (h_i .
  h_j + c)``: linear attention on the codes, O(N b d).

Both loop in a fixed order in float32 without reassociation, and :func:`reference` adds in the
same order, so the kernels match it bit for bit.
"""

from __future__ import annotations

import numpy as np


def _add_row():
    """A TIR macro: key ``j``'s value row added to context row ``t`` (``acc``) and counted (``cnt``).
    Expanded in place where :func:`context_kernel` calls it, so the kernel is as if written inline."""
    from tvm.script import tirx as T

    @T.macro
    def add_row(acc, cnt, v, g, j, t, dv):
        cnt[t] = cnt[t] + T.float32(1)
        for e in T.vectorized(dv):
            acc[t, e] = acc[t, e] + v[g, j, e]

    return add_row


def context_kernel(groups: int, n: int, bits: int, dv: int, c: float):
    """TIR: ``(codes [G, N] int32, keep [G, N] int32, v [G, N, dv]) -> (ctx [G, b+1, dv], z [G, b+1])``."""
    from tvm.script import tirx as T

    cc = float(c)
    add_row = _add_row()

    @T.prim_func(private=True, s_tir=True)
    def hash_context(
        codes: T.Buffer((groups, n), "int32"),
        keep: T.Buffer((groups, n), "int32"),
        v: T.Buffer((groups, n, dv), "float32"),
        ctx: T.Buffer((groups, bits + 1, dv), "float32"),
        z: T.Buffer((groups, bits + 1), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for g in T.parallel(groups):
            with T.sblock("context"):
                vg = T.axis.spatial(groups, g)
                T.reads(codes[vg, 0:n], keep[vg, 0:n], v[vg, 0:n, 0:dv])
                T.writes(ctx[vg, 0 : bits + 1, 0:dv], z[vg, 0 : bits + 1])
                acc = T.sblock_alloc_buffer((bits + 1, dv), "float32", scope="local")
                cnt = T.sblock_alloc_buffer((bits + 1,), "float32", scope="local")
                for t in range(bits + 1):
                    cnt[t] = T.float32(0)
                    for e in T.vectorized(dv):
                        acc[t, e] = T.float32(0)
                for j in range(n):
                    if keep[vg, j] != 0:
                        add_row(acc, cnt, v, vg, j, bits, dv)
                        for t in range(bits):
                            if T.bitwise_and(T.shift_right(codes[vg, j], t), 1) == 1:
                                add_row(acc, cnt, v, vg, j, t, dv)
                for t in range(bits):
                    z[vg, t] = (cnt[t] + cnt[t]) - cnt[bits]
                    for e in T.vectorized(dv):
                        ctx[vg, t, e] = (acc[t, e] + acc[t, e]) - acc[bits, e]
                z[vg, bits] = T.float32(cc) * cnt[bits]
                for e in T.vectorized(dv):
                    ctx[vg, bits, e] = T.float32(cc) * acc[bits, e]

    return hash_context


def output_kernel(groups: int, n: int, bits: int, dv: int):
    """TIR: ``(codes [G, N] int32, ctx [G, b+1, dv], z [G, b+1]) -> out [G, N, dv]``."""
    from tvm.script import tirx as T

    rows = groups * n

    @T.prim_func(private=True, s_tir=True)
    def hash_output(
        codes: T.Buffer((groups, n), "int32"),
        ctx: T.Buffer((groups, bits + 1, dv), "float32"),
        z: T.Buffer((groups, bits + 1), "float32"),
        out: T.Buffer((groups, n, dv), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for r in T.parallel(rows):
            with T.sblock("output"):
                vr = T.axis.spatial(rows, r)
                T.reads(codes[vr // n, vr % n], ctx[vr // n, 0 : bits + 1, 0:dv], z[vr // n, 0 : bits + 1])
                T.writes(out[vr // n, vr % n, 0:dv])
                acc = T.sblock_alloc_buffer((dv,), "float32", scope="local")
                den = T.sblock_alloc_buffer((1,), "float32", scope="local")
                g = vr // n
                code = codes[g, vr % n]
                den[0] = z[g, bits]
                for e in T.vectorized(dv):
                    acc[e] = ctx[g, bits, e]
                for t in range(bits):
                    if T.bitwise_and(T.shift_right(code, t), 1) == 1:
                        den[0] = den[0] + z[g, t]
                        for e in T.vectorized(dv):
                            acc[e] = acc[e] + ctx[g, t, e]
                    else:
                        den[0] = den[0] - z[g, t]
                        for e in T.vectorized(dv):
                            acc[e] = acc[e] - ctx[g, t, e]
                inv = T.float32(1) / den[0]
                for e in T.vectorized(dv):
                    out[g, vr % n, e] = acc[e] * inv

    return hash_output


def pack(signs: np.ndarray) -> np.ndarray:
    """``[..., b]`` booleans (bit ``t`` set: ``h_t = +1``) as int32 words ``[...]``."""
    bits = signs.shape[-1]
    return (signs.astype(np.int64) << np.arange(bits)).sum(-1).astype(np.int32)


def reference(
    codes_q: np.ndarray, codes_k: np.ndarray, keep: np.ndarray, v: np.ndarray, bits: int, c: float
) -> np.ndarray:
    """The two kernels in numpy, in their order of float32 additions: ``[G, N, dv]``."""
    f = np.float32
    groups, n, dv = v.shape
    out = np.empty_like(v, dtype=f)
    for g in range(groups):
        acc, cnt = np.zeros((bits + 1, dv), f), np.zeros(bits + 1, f)
        for j in range(n):
            if keep[g, j]:
                cnt[bits] += f(1)
                acc[bits] += v[g, j]
                for t in range(bits):
                    if (int(codes_k[g, j]) >> t) & 1:
                        cnt[t] += f(1)
                        acc[t] += v[g, j]
        ctx = np.empty_like(acc)
        z = np.empty_like(cnt)
        ctx[:bits] = (acc[:bits] + acc[:bits]) - acc[bits]
        z[:bits] = (cnt[:bits] + cnt[:bits]) - cnt[bits]
        ctx[bits] = f(c) * acc[bits]
        z[bits] = f(c) * cnt[bits]
        for i in range(n):
            a, d = ctx[bits].copy(), z[bits]
            for t in range(bits):
                if (int(codes_q[g, i]) >> t) & 1:
                    d, a = d + z[t], a + ctx[t]
                else:
                    d, a = d - z[t], a - ctx[t]
            out[g, i] = a * (f(1) / d)
    return out
