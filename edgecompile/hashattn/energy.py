"""The attention energy of one block, softmax against binary-hash attention, from op counts with
the target profile's energy table (:mod:`edgecompile.ir.energy`'s conventions): the manifest's
``energy_softmax_uj`` / ``energy_hash_uj``."""

from __future__ import annotations

from edgecompile.hashattn.options import HashOptions


def block_energy(g: int, n: int, d: int, dv: int, options: HashOptions, table: dict) -> tuple[float, float]:
    """Attention energy (uJ) of one block, softmax vs hash, from op counts with
    :mod:`edgecompile.ir.energy`'s conventions: a multiply-add is a multiply and an add; exp 4 + 4
    and softmax 5 + 5 per element; every op reads its operands and writes its result (32-bit
    words). The hash side assumes half the bits of a key set (its context adds), and adds the
    ``global_queries`` rows computed exactly (softmax's costs on ``P`` of the ``N`` queries, plus
    reading K and V and writing the output around them)."""
    mul, add, mem = table["fp32_mul"], table["fp32_add"], table["mem_read_32b"]
    nn = g * n * n
    # Q K^T, scale, (mask), softmax, P V
    soft_ops = nn * d + nn + 5 * nn + nn * dv
    soft = soft_ops * mul + (soft_ops + nn) * add
    soft += (g * n * d * 2 + nn + 2 * nn * 4 + g * n * dv + nn + g * n * dv) * mem
    m, b = options.anchors, options.bits
    rows = 2 * g * n  # queries and keys: normalise, anchors, exp, centre, projection, pack
    feat_mul = rows * (2 * d + m * d + 5 * m + m * b)
    feat_add = rows * (d + m * d + 5 * m + m * b + 2 * b)
    ctx_add = g * n * (1 + b // 2) * dv  # each kept key: its value row into Sv and into its set bits' rows
    out_add, out_mul = g * n * b * (dv + 1), g * n * (dv + 1)  # +-C[t] rows, the denominator, 1/den
    # the key bias: k_j . g, exp (4 + 4), e_j v_j and the final ratio (a divide counted as a multiply)
    bias_mul = g * n * (d + 4 + 2 * dv) if options.key_bias else 0
    bias_add = g * n * (d + 4) if options.key_bias else 0
    hashed = (feat_mul + out_mul + bias_mul) * mul + (feat_add + ctx_add + out_add + bias_add) * add
    hashed += (rows * (2 * d + 4 * m + 2 * b) + g * n * dv * 2 + g * n * (b + 1) * (dv + 1)) * mem
    hashed += (g * n * (d + 2 * dv + 2) if options.key_bias else 0) * mem
    # the global queries' exact rows: softmax attention on a [G, P, N] slice, and their scatter
    pn = g * min(options.global_queries, n) * n
    exact_ops = pn * d + pn + 5 * pn + pn * dv
    hashed += exact_ops * mul + (exact_ops + pn) * add
    hashed += (g * min(options.global_queries, n) * (d + 2 * dv) + g * n * d + pn * 10 + g * n * dv + g * n * dv) * mem
    return soft * 1e-6, hashed * 1e-6
