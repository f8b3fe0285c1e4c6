"""Float32 ``exp`` as a degree-5 polynomial: the exp of every sigmoid, SiLU and explicit ``Exp``.

``exp(x) = 2^n * p(r)`` with ``n = round(x / ln 2)``, ``r = x - n ln 2`` (Cody-Waite: ``ln 2`` in two
parts, so ``r`` is exact to float precision for every ``n``) and ``p`` the degree-5 polynomial
closest to ``exp`` on ``[-ln2/2, ln2/2]`` in relative error (7.5e-8 in exact arithmetic; evaluated
in float32 by Horner's rule with fused multiply-adds, within 2.5e-7 of ``exp`` over the whole
range). ``2^n`` is built in the exponent bits. ``x`` is clamped to ``[EXP_LO, EXP_HI]`` first:
above, the result is about 2.4e38 rather than inf; below, about 2^-126 rather than a denormal or 0
(sigmoid's limits are then 4e-39 and 1); NaN stays NaN. TVM's ``fast_exp`` (what ``FastMathTransform`` puts in)
evaluates a degree-7 polynomial and a final ``max``: on a 3x3 depthwise + SiLU over 192x64x64
(AVX-512, 1 thread) its SiLU cost 189 us, this one 126 us; MobileViT runs SiLU on 8.7 M values."""

from __future__ import annotations

import tvm
from tvm import relax, te

from edgecompile.passes.rewrite import rewrite_functions

EXP_HI = 88.3762626647949  # n = 127 at most: 2^n stays a finite float
EXP_LO = -87.3365478515625  # n = -126 at least: 2^n stays a normal float
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693145751953125, 1.428606765330187e-06  # ln 2 = HI + LO, HI with 16 significant bits
# exp(r) on [-ln2/2, ln2/2], highest power first (relative-error minimax, Lawson's iteration)
COEFFS = (
    0.00829765492864088,
    0.041915382883405516,
    0.16667574736417198,
    0.4999889484336815,
    0.9999996919876355,
    1.0000000716554331,
)


def poly_exp(x: te.Tensor) -> te.Tensor:
    """The TE compute of ``exp(x)`` for a float32 tensor (module docstring)."""

    def c(v: float):
        return tvm.tirx.const(v, "float32")

    def value(*idx):
        # the bound first: TVM's min/max are ``a < b ? a : b``, so a NaN input passes through
        t = te.max(c(EXP_LO), te.min(c(EXP_HI), x(*idx)))
        n = te.floor(t * c(LOG2E) + c(0.5))
        r = (t - n * c(LN2_HI)) - n * c(LN2_LO)
        p = c(COEFFS[0])
        for k in COEFFS[1:]:
            p = p * r + c(k)
        return p * tvm.tirx.reinterpret("float32", (n.astype("int32") + 127) << 23)

    return te.compute(x.shape, value, name="exp_poly")


def poly_softmax(x: te.Tensor, axis: int) -> te.Tensor:
    """Softmax along ``axis`` with :func:`poly_exp`: TVM's ``fast_softmax`` stages (row max, exp of
    the difference, row sum, normalization), the normalization a multiply by the row sum's
    reciprocal rather than a divide per element (as ONNX Runtime's)."""
    axis = axis % len(x.shape)
    shape = list(x.shape)
    rows = [d for i, d in enumerate(shape) if i != axis]
    k1, k2 = te.reduce_axis((0, shape[axis]), name="k"), te.reduce_axis((0, shape[axis]), name="k")

    def at(r, k):
        return (*r[:axis], k, *r[axis:])

    def row(i):
        return tuple(v for n, v in enumerate(i) if n != axis)

    peak = te.compute(rows, lambda *r: te.max(x[at(r, k1)], axis=k1), name="T_softmax_maxelem")
    delta = te.compute(shape, lambda *i: x(*i) - peak[row(i)], name="T_softmax_delta")
    exp = poly_exp(delta)
    total = te.compute(rows, lambda *r: te.sum(exp[at(r, k2)], axis=k2), name="T_softmax_expsum")
    one = tvm.tirx.const(1.0, "float32")
    return te.compute(shape, lambda *i: exp(*i) * (one / total[row(i)]), name="T_softmax_norm")


@relax.expr_functor.mutator
class _ExpRewriter(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name not in ("relax.exp", "relax.nn.softmax") or str(call.args[0].ty.dtype) != "float32":
            return call
        if name == "relax.nn.softmax":
            return self.builder_.call_te(poly_softmax, call.args[0], int(call.attrs.axis), primfunc_name_hint="softmax")
        return self.builder_.call_te(poly_exp, call.args[0], primfunc_name_hint="exp_poly")


@tvm.transform.module_pass(opt_level=0, name="PolynomialExp")
class PolynomialExp:
    """Float32 ``exp`` -> :func:`poly_exp` and ``softmax`` -> :func:`poly_softmax` (before
    ``FastMathTransform``, which would put TVM's slower ``fast_exp`` in their place)."""

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _ExpRewriter(mod))
