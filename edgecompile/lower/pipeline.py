"""The Relax compilation pipeline per target.

CPU (LLVM) targets: TVM's generic CPU phases with two additions of ours:
- before legalization, GELU and sigmoid/SiLU are decomposed, exp becomes our degree-5 polynomial
  (:mod:`..poly_exp`, relative error within 2.5e-7) and erf/tanh/softmax TVM's fast, vectorizable
  approximations (``FastMathTransform``; max abs error ~1e-7 on erf, far inside our 1e-4-of-range
  tolerance against ONNX Runtime) — libm's scalar calls otherwise cost more than the GEMMs around
  them;
- patch-embedding convolutions (stride = kernel) become GEMMs (:mod:`..patchify`), other float
  convolutions im2col GEMMs, transposed ones block GEMMs (:mod:`..conv_gemm`), depthwise ones and
  pools elementwise over their taps (:mod:`..window_taps`), resizes a row pass and a column pass
  (:mod:`..separable_resize`), boolean ``where`` one select on the condition (:mod:`..bool_select`);
- matmuls with constant weights read them packed in column panels (:mod:`..pack_weights`);
- after fusion, every PrimFunc is scheduled by our rules (:mod:`edgecompile.lower.schedules`);
  TVM's default CPU pipeline leaves them as unscheduled loop nests.
GPU targets use TVM's default pipeline for the kind (dlight GPU rules), after our hand-written
kernels (integer square root, hash attention), which come scheduled for CPUs with ``T.parallel``
outer loops, have those loops bound to GPU blocks and threads (:class:`BindParallelLoops`);
otherwise the GPU build would compile them as host code reading device memory.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax

from edgecompile.passes.rewrite import rewrite_functions


@relax.expr_functor.mutator
class _ActivationDecomposer(relax.PyExprMutator):
    """``gelu(x)`` -> ``0.5 x (1 + erf(x / sqrt 2))``, ``gelu_tanh`` -> its tanh form, ``sigmoid(x)``
    -> ``1 / (1 + exp(-x))`` and ``silu(x)`` -> ``x sigmoid(x)`` (float inputs)."""

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name not in ("relax.nn.gelu", "relax.nn.gelu_tanh", "relax.sigmoid", "relax.nn.silu"):
            return call
        x = call.args[0]
        dtype = x.ty.dtype
        if "float" not in str(dtype):
            return call

        def c(v):
            return relax.const(v, dtype)

        if name in ("relax.sigmoid", "relax.nn.silu"):
            # exp(-x) overflows to inf for x < -88: 1 / inf = 0, sigmoid's limit
            sig = relax.op.divide(c(1.0), relax.op.add(c(1.0), relax.op.exp(relax.op.negative(x))))
            return sig if name == "relax.sigmoid" else relax.op.multiply(x, sig)
        if name == "relax.nn.gelu":
            inner = relax.op.erf(relax.op.multiply(x, c(1 / math.sqrt(2))))
        else:
            cube = relax.op.multiply(relax.op.multiply(x, x), x)
            poly = relax.op.add(x, relax.op.multiply(cube, c(0.044715)))
            inner = relax.op.tanh(relax.op.multiply(poly, c(math.sqrt(2 / math.pi))))
        return relax.op.multiply(relax.op.multiply(x, c(0.5)), relax.op.add(c(1.0), inner))


@tvm.transform.module_pass(opt_level=0, name="DecomposeActivations")
class DecomposeActivations:
    """Expose GELU's erf/tanh and sigmoid's (SiLU's) exp to ``FastMathTransform``: TVM lowers
    ``sigmoid`` to libm's scalar ``expf`` (MobileViT's SiLU epilogues ran at 0.3 GOP/s)."""

    def transform_module(self, mod, _ctx):
        return rewrite_functions(mod, _ActivationDecomposer(mod))


@tvm.transform.module_pass(opt_level=0, name="BindParallelLoops")
class BindParallelLoops:
    """On GPU targets: every ``T.parallel`` loop at the top of a pre-scheduled PrimFunc becomes
    ``blockIdx.x`` x ``threadIdx.x`` (the iterations are independent by construction), and the
    CPU-width vectorized loops inside become serial loops of each thread."""

    def __init__(self, threads: int = 128):
        self.threads = threads

    def transform_module(self, mod, _ctx):
        from tvm import s_tir

        for gv, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or not func.attrs or "tirx.is_scheduled" not in func.attrs:
                continue
            sch = s_tir.Schedule(func)
            bound = False
            for block in sch.get_child_blocks(sch.get_sblock("root")):
                loops = sch.get_loops(block)
                if loops and sch.get(loops[0]).kind == tvm.tirx.ForKind.PARALLEL:
                    outer, inner = sch.split(loops[0], [None, self.threads])
                    sch.bind(outer, "blockIdx.x")
                    sch.bind(inner, "threadIdx.x")
                    bound = True
            if bound:
                # a GPU thread has no 64-lane vectors: its vectorized loops become plain loops
                scalar = tvm.tirx.transform.VectorizeLoop(enable_vectorize=False)(sch.mod)
                mod[gv] = scalar["main"]
        return mod


def schedule_passes(target) -> list:
    """The passes that replace TVM's default scheduling for ``target`` (empty for GPU targets)."""
    from edgecompile.lower.schedules import cpu_rules
    from edgecompile.lower.schedules.recorded import ApplyRulesRecorded

    if target.kind.name != "llvm":
        return []
    return [ApplyRulesRecorded(*cpu_rules())]


def pre_legalize_passes(target) -> list:
    """Graph rewrites before legalization on CPU: GELU decomposition, fast math, weight packing."""
    from edgecompile.lower.pack_weights import PackMatmulWeights
    from edgecompile.passes.bool_select import WhereAsSelect
    from edgecompile.passes.conv_gemm import ConvToGemm
    from edgecompile.passes.patchify import PatchifyConv
    from edgecompile.passes.poly_exp import PolynomialExp
    from edgecompile.passes.separable_resize import SeparableResize
    from edgecompile.passes.window_taps import WindowTaps

    # FoldConstant first: exporters write Linear as matmul(x, permute_dims(W)).
    return [
        DecomposeActivations(),
        PolynomialExp(),
        relax.transform.FastMathTransform(),
        relax.transform.FoldConstant(),
        PatchifyConv(),
        ConvToGemm(),
        WindowTaps(),
        SeparableResize(),
        WhereAsSelect(),
        PackMatmulWeights(target),
    ]


def fusion_passes(target) -> list:
    """Everything before scheduling: the module whose kernels are the tuning tasks."""
    from tvm.relax.backend.cpu_generic import pipeline as generic

    from edgecompile.lower.reshape_epilogue import FlatReshapeAsElementwise

    legalize = generic.legalize_passes(target)
    # before FuseOps: a conv GEMM's reshape marked elementwise so its bias and activation fuse in
    fuse = next(i for i, p in enumerate(legalize) if p.info.name == "FuseOps")
    legalize = [*legalize[:fuse], FlatReshapeAsElementwise(target), *legalize[fuse:]]
    return generic.library_dispatch_passes(target) + pre_legalize_passes(target) + legalize


def cpu_pipeline(target, tuning_db=None, on_fused=None, weights=None, on_planned=None) -> tvm.transform.Pass:
    """TVM's CPU phases with our rewrites before legalization and our schedules after fusion;
    kernels with a record in ``tuning_db`` (a directory) take the tuned schedule instead.
    ``on_fused(mod)`` sees the fused, not yet scheduled module (its kernels as TIR); ``weights``
    (a :class:`~edgecompile.lower.external_weights.LiftedWeights`) takes the weights out of the
    library (:mod:`edgecompile.lower.external_weights`); ``on_planned(mod)`` sees the module
    after static memory planning (:mod:`edgecompile.lower.memory_plan`)."""
    from tvm.relax.backend.cpu_generic import pipeline as generic

    from edgecompile.lower.schedules.recorded import mark_scheduled
    from edgecompile.lower.tune import apply_database_pass

    tuned = [apply_database_pass(tuning_db), mark_scheduled("tuned")] if tuning_db is not None else []
    passes = (
        fusion_passes(target)
        + _taps(on_fused)
        + [mark_scheduled("hand-written")]
        + tuned
        + schedule_passes(target)
        + _lift(weights)
        + generic.dataflow_lower_passes(target)
        + _after_planning(generic.finalize_passes(target), on_planned)
    )
    return tvm.transform.Sequential(passes, name="edgecompile_cpu")


def _lift(weights) -> list:
    from edgecompile.lower.external_weights import LiftWeights

    return [] if weights is None else [LiftWeights(weights)]


def _after_planning(finalize: list, on_planned) -> list:
    """``finalize`` with the ``on_planned`` tap right after ``StaticPlanBlockMemory``."""
    if on_planned is None:
        return finalize
    names = [p.info.name for p in finalize]
    at = names.index("StaticPlanBlockMemory") + 1
    return finalize[:at] + _taps(on_planned) + finalize[at:]


def _taps(*callbacks) -> list:
    return [_tap(c) for c in callbacks if c is not None]


def _tap(on_fused) -> tvm.transform.Pass:
    def look(mod, _ctx):
        on_fused(mod.clone())  # later passes update functions in place (our schedules, the weights lift)
        return mod

    return tvm.transform.module_pass(look, opt_level=0, name="edgecompile_tap_fused")


def pipeline_for(target, tuning_db=None, on_fused=None, weights=None, on_planned=None):
    """The Relax pipeline ``tvm.compile`` should run for ``target`` (``on_fused``: CPU targets
    only; ``weights``, ``on_planned``: see :func:`cpu_pipeline`)."""
    if target.kind.name == "llvm":
        return cpu_pipeline(target, tuning_db, on_fused, weights, on_planned)
    if target.kind.name == "cuda":
        return cuda_pipeline(target, weights, on_planned)
    return opencl_pipeline(target, weights, on_planned)


def opencl_pipeline(target, weights=None, on_planned=None) -> tvm.transform.Pass:
    """TVM's default OpenCL pipeline (Adreno's phases where the target is an Adreno, else the generic
    GPU ones: dlight's rules) taken apart at its phases, after :class:`BindParallelLoops`, so that the
    weights are lifted out of the library like on CPU and CUDA (a ranged artifact stores them once)."""
    from tvm.relax.backend.adreno import pipeline as adreno
    from tvm.relax.backend.gpu_generic import pipeline as generic
    from tvm.s_tir import dlight as dl

    from edgecompile.lower.schedules.gpu_reduction import WholeReduction

    phases = adreno if "adreno" in target.keys else generic
    legalize = phases.legalize_passes(target)
    if phases is generic:  # whole-tensor reductions ours, before dlight's rules (its last pass) run one thread
        legalize.insert(len(legalize) - 1, dl.ApplyDefaultSchedule(WholeReduction()))
    return _gpu_phases(target, phases, legalize, weights, on_planned, "edgecompile_opencl")


def _gpu_phases(target, phases, legalize: list, weights, on_planned, name: str) -> tvm.transform.Pass:
    """A GPU backend's phases (``phases``: TVM's pipeline module for it) with our ``legalize``
    (fusion and scheduling), after :class:`BindParallelLoops`, the weights lifted after scheduling
    and the ``on_planned`` tap after memory planning."""
    passes = (
        [BindParallelLoops()]
        + phases.library_dispatch_passes(target)
        + legalize
        + _lift(weights)
        + phases.dataflow_lower_passes(target)
        + _after_planning(phases.finalize_passes(target), on_planned)
    )
    return tvm.transform.Sequential(passes, name=name)


def gpu_fusion_passes() -> list:
    """Legalization and fusion on GPU targets (TVM's, before scheduling)."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def cuda_pipeline(target, weights=None, on_planned=None) -> tvm.transform.Pass:
    """TVM's CUDA phases with dlight's rules, int8 GEMMs scheduled by ours (``__dp4a``; int8 WMMA only
    where it compiles, :mod:`edgecompile.lower.schedules.gpu_matmul`), after :class:`BindParallelLoops`."""
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    from edgecompile.lower.schedules.gpu_matmul import Int8Dp4aMatmul, Matmul
    from edgecompile.lower.schedules.gpu_reduction import WholeReduction

    rules = [Int8Dp4aMatmul(), Matmul(), dl.gpu.GEMV(), WholeReduction(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()]
    legalize = gpu_fusion_passes() + [dl.ApplyDefaultSchedule(*rules, dl.gpu.Fallback())]
    return _gpu_phases(target, cuda, legalize, weights, on_planned, "edgecompile_cuda")
