"""Function attribute names that a rewrite writes on the TIR kernels it emits and that readers
(the numpy interpreter, the energy count, the schedules) look up."""

OPS_ATTR = "edgecompile.ops"  # a TIR kernel's own op counts per call ({"fp32_add": n, ...})
QUANTIZE_ATTR = "edgecompile.quantize"  # (1/S, limit) of an input quantize kernel
ROW_DIVIDE_ATTR = "edgecompile.row_divide"  # (numerator or -1, add, divisor or -1) of a per-row division
# IRModule attribute a recipe sets for the CPU lowering: "bf16" runs the float matmuls with constant
# weights on the bf16 dot product (edgecompile.lower.pack_weights)
MATMUL_PRECISION_ATTR = "edgecompile.matmul_precision"
