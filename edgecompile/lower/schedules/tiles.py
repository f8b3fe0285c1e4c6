"""GEMM register-tile sizes for a vector ISA (shared by the matmul rule and weight packing)."""

from __future__ import annotations

from edgecompile.lower.schedules.isa import VectorISA

# Accumulator vectors per tile row with 16 vector registers (AVX2): 3 x 4 rows = 12 accumulators,
# 3 B vectors and 1 broadcast fill the register file; measured 6-8% faster than 2 on MiniLM-sized.
NVEC_16 = 3
# A 1-vector-wide tile loads as many A broadcasts as it does FMAs: counted as this fraction of a wider
# tile's speed when choosing how to pad a ragged N (197 keys: 2 vectors, 224 columns, not 4, 256)
ONE_VECTOR_EFFICIENCY = 0.7


def gemm_nr(isa: VectorISA, n: int | None, dtype_bits: int) -> int:
    """Tile width along N: 3 vectors with 16 registers, 4 with 32, fewer if N does not divide."""
    vw = isa.lanes(dtype_bits)
    nvec = NVEC_16 if isa.registers <= 16 else 4
    if n is None:
        return nvec * vw
    if n < vw:
        return max(1, n)
    options = (nvec * vw, 4 * vw, 2 * vw, vw)
    for opt in options:
        if n % opt == 0:
            return opt
    # the matmul rule pads N up to a multiple: the least padded work, a 1-vector tile counted slower
    return least_padded(options, n, vw)


def least_padded(widths, n: int, lanes: int) -> int:
    """The tile width of ``widths`` with the least work for ``n`` columns padded up to whole tiles,
    a one-vector (``lanes``) tile counted at :data:`ONE_VECTOR_EFFICIENCY`; ties: the first."""
    return min(widths, key=lambda w: -(-n // w) * w / (ONE_VECTOR_EFFICIENCY if w == lanes else 1.0))


def gemm_mr(isa: VectorISA, m: int | None, nr: int, dtype_bits: int, allow_tail: bool = False) -> int:
    """Rows per tile: as many as fit the register file with the NR-wide accumulators, the B
    vectors and one broadcast of A; prefers a divisor of M. With ``allow_tail`` (the caller pads
    M), an M with no useful divisor (197) takes the largest tile instead of 1-row tiles."""
    vecs = max(1, nr // isa.lanes(dtype_bits))
    budget = isa.registers - vecs - 1
    options = [r for r in (6, 4, 3, 2, 1) if r * vecs <= budget] or [1]
    if m is None:
        return options[0]
    for r in options:
        if m % r == 0 and (r > 1 or not allow_tail):
            return r
    return options[0] if m >= options[0] else max(1, m)


# Speed per row of a dot-product GEMM tile of r rows against the tallest (6): taller tiles reuse each
# loaded B vector more (16x4 measured 135 GOP/s against 142 for 16x6 on MiniLM's 128x384x1536, AVX2)
DOT_ROW_EFFICIENCY = {6: 1.0, 4: 0.95, 3: 0.9, 2: 0.8, 1: 0.6}


def dot_gemm_mr(isa: VectorISA, m: int | None, nr: int) -> int:
    """Rows per tile of a dot-product GEMM (its A is padded to whole tiles): the tallest that fits,
    unless a shorter one wastes less on padding for this M (16 tokens: 6-row tiles compute 18 rows,
    12% more; 4-row tiles none). M unknown: the tallest."""
    tallest = gemm_mr(isa, None, nr, 32)
    if m is None:
        return tallest
    options = [r for r in DOT_ROW_EFFICIENCY if r <= tallest]
    return min(options, key=lambda r: -(-m // r) * r / DOT_ROW_EFFICIENCY[r])
