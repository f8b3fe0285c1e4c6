"""The ``lowrank`` recipe: factorize linear layers where it saves time, with ranks under a budget.

1. Calibrate: the float model runs on the calibration samples and each candidate layer's input
   streams into its second moment (:class:`edgecompile.lowrank.factorize.SecondMoment`); without
   samples, plain SVD (a warning says so).
2. Spectra: each layer's whitened SVD; ``error(r)`` is its exact relative output error on the
   calibration tokens at rank ``r``.
3. Ranks, by the budget (exactly one):
   - ``ratio=0.5``: ``r = 0.5 r*`` (``r* = in out / (in + out)``: half the parameters and MACs);
   - ``rank=128``: that rank everywhere;
   - ``energy=0.95``: the smallest rank keeping 95% of the whitened spectrum's energy;
   - ``max_drop=1%``: the largest per-layer error threshold whose model, on the calibration
     samples, changes the top-1 class of at most 1% of them and shifts the class probabilities by
     at most 1% (mean total variation; a 2-D output: a classifier), or moves the output by at most
     1% relative L2 error (any other model); bisection over the candidate ranks' errors, each step
     compiled and run;
   - ``speedup=1.5``: starting dense, lower the rank where the error grows least per millisecond
     saved (:class:`edgecompile.lowrank.latency.LatencyTable`) until the factorizable layers
     together run 1.5x faster.
   Ranks are multiples of ``multiple`` (default: the target's GEMM tile width,
   :attr:`edgecompile.ir.stage.StageContext.gemm_tile`).
   The speed gate: a layer whose factorized form is not faster on the target stays dense
   (``gate=measure``: timed on this machine, the default for its own CPU targets; ``estimate``:
   from multiply-adds, the default for other targets; ``off``: factorize wherever the rank is
   below break-even).
4. Refit: the model with every chosen layer factorized runs on the samples once more, and each
   layer's outer factor is refit by least squares to the float model's outputs from its actual
   (upstream-factorized) inputs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import tvm

from edgecompile.calibrate.capture import Runner, observe, padded_runner
from edgecompile.calibrate.output_drop import output_drop
from edgecompile.errors import RecipeError
from edgecompile.ir.host import HostFunction
from edgecompile.ir.stage import StageContext
from edgecompile.ir.walk import building_with, carry_functions
from edgecompile.lowrank.factorize import SecondMoment, breakeven_rank, refit_outer, round_rank, spectrum
from edgecompile.lowrank.latency import LatencyTable
from edgecompile.lowrank.options import LowRankOptions
from edgecompile.lowrank.rewrite import Site, factorize_function, find_sites
from edgecompile.passes.patchify import linear_form

log = logging.getLogger(__name__)

GRID = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)  # fractions of r* tried by max_drop and speedup
EVAL_SAMPLES = 64


@dataclass
class LowRankResult:
    mod: tvm.IRModule
    layers: list[dict]
    method: str
    samples: int
    model_error: dict = field(default_factory=dict)
    factors: dict = field(default_factory=dict, repr=False)  # site name -> (P, Q)
    layers_option: str = "ffn"

    def retarget(self, mod: tvm.IRModule) -> tvm.IRModule:
        """The same factorization of ``mod``: the model imported at other static input shapes (a
        bucket of a ranged artifact, :mod:`edgecompile.ranged`); sites are matched by name."""
        mod = linear_form(mod)
        sites = {s.name: s for s in find_sites(mod["main"], self.layers_option)}
        if not set(self.factors) <= set(sites):
            raise RecipeError("lowrank: the model's layers differ between the bucket sizes of its ranged inputs")
        factors = {sites[name].binding.var: pq for name, pq in self.factors.items()}
        return carry_functions(tvm.IRModule({"main": factorize_function(mod["main"], factors)}), mod)

    def to_json(self, config: LowRankOptions) -> dict:
        before = sum(r["params_before"] for r in self.layers)
        after = sum(r["params_after"] for r in self.layers)
        return {
            "budget": config.spec,
            "layers_option": config.layers,
            "method": self.method,
            "refit": config.refit and self.samples > 0,
            "samples": self.samples,
            "params_before": before,
            "params_after": after,
            "model_error": self.model_error,
            "layers": self.layers,
        }


def lowrank_model(mod: tvm.IRModule, ctx: StageContext, options: LowRankOptions) -> LowRankResult:
    """The factorized module of ``mod``: calibrated on ``ctx.samples`` (None: plain SVD) run with
    ``ctx.host_build``; the speed gate times layers built by ``ctx.target_build`` for ``ctx.profile``;
    ranks are multiples of ``options.multiple`` (0: ``ctx.gemm_tile``); ``ctx.progress(stage, done, total)``."""
    say = ctx.progress
    mod = linear_form(mod)
    func = mod["main"]
    build = building_with(ctx.host_build, mod)
    sites = find_sites(func, options.layers)
    if not sites:
        raise RecipeError(
            f"lowrank: the model has no {'FFN ' if options.layers == 'ffn' else ''}linear layers to factorize"
        )
    samples = list(ctx.samples or [])
    if options.budget == "max_drop" and not samples:
        raise RecipeError("lowrank: max_drop measures the model on calibration samples: pass --calib")
    xs = list(dict.fromkeys(s.x for s in sites))
    frun, spectra, method = _spectra(func, sites, xs, samples, ctx.input_names, build, say, ctx.padding)
    if not options.multiple:
        options = dataclasses.replace(options, multiple=ctx.gemm_tile)
    table = LatencyTable(ctx.profile, ctx.target_build, measure={"measure": True, "estimate": False}.get(options.gate))
    dense_ms = {}
    for i, s in enumerate(sites):
        dense_ms[s.name] = table.dense(s.tokens, *s.weight.shape)
        say("timing dense layers", i + 1, len(sites))
    search = RankSearch(func, sites, xs, frun, spectra, options, table, dense_ms, samples[:EVAL_SAMPLES],
                        ctx.input_names, build, say)  # fmt: skip
    ranks = search.choose()
    factors = {s.binding.var: spectra[s.name].factors(r) for s in sites if (r := ranks[s.name])}
    if samples and options.refit and factors:
        factors = search.refit(factors)
    out_func = factorize_function(func, factors)
    out = carry_functions(tvm.IRModule({"main": out_func}), mod)
    rows = [search.row(s, ranks[s.name]) for s in sites]
    model_error = search.model_error(factors) if samples else {}
    by_name = {s.name: factors[s.binding.var] for s in sites if s.binding.var in factors}
    return LowRankResult(out, rows, method, len(samples), model_error, by_name, options.layers)


def _spectra(func, sites: list[Site], xs: list, samples: list[dict], names: list[str], build, say, padding=None):
    """``(float run, spectra, method)``: each site's whitened spectrum from its inputs' second
    moment on ``samples`` (the run returns every ``xs``; a ranged compile's ``padding`` left out),
    or without samples its plain SVD."""
    if not samples:
        log.warning("lowrank without calibration data: plain SVD of the weights (whitened SVD needs --calib)")
        return None, {s.name: spectrum(s.weight) for s in sites}, "svd"
    frun = padded_runner(func, xs, names, build, padding, linear_form)
    moments = observe(frun, xs, samples, SecondMoment, lambda i, n: say("calibrating", i, n))
    return frun, {s.name: spectrum(s.weight, moments[s.x].c) for s in sites}, "whitened"


class RankSearch:
    """Rank selection for one model (the budgets of the module docstring), with the speed gate."""

    def __init__(self, func, sites, xs, float_run, spectra, config, table, dense_ms, samples, names, build, say):
        self.func, self.sites, self.xs, self.spectra, self.config, self.table = func, sites, xs, spectra, config, table
        self.float_run: Runner | None = float_run  # the float model returning every site's input
        self.dense_ms = dense_ms  # site name -> its dense latency on the target
        self.samples, self.names, self.build, self.say = samples, names, build, say
        self._reference = None

    def gate(self, s: Site, r: int | None) -> int | None:
        """``r``, or None where the factorized layer would not be smaller or (gate on) faster."""
        n_in, n_out = s.weight.shape
        if r is None or r >= breakeven_rank(n_in, n_out):
            return None
        if self.config.gate == "off":
            return r
        return r if self.table.factored(s.tokens, n_in, r, n_out) < self.dense_ms[s.name] else None

    def row(self, s: Site, r: int | None) -> dict:
        """The manifest row of one site factorized at rank ``r`` (None: kept dense)."""
        n_in, n_out = s.weight.shape
        cand = self.candidate_rank(s)
        return {
            "name": s.name,
            "role": s.role,
            "shape": [n_in, n_out],
            "tokens": s.tokens,
            "rank": r,
            "params_before": n_in * n_out,
            "params_after": r * (n_in + n_out) if r else n_in * n_out,
            "error": round(self.spectra[s.name].error(r), 5) if r else 0.0,
            "dense_ms": round(self.dense_ms[s.name], 4),
            "factored_ms": round(self.table.factored(s.tokens, n_in, r, n_out), 4) if r else None,
            "kept_dense": None if r else self.why_dense(s, cand),
        }

    def candidate_rank(self, s: Site) -> int | None:
        """The rank the budget asks for, before the speed gate (ratio, rank, energy)."""
        n_in, n_out = s.weight.shape
        c, m = self.config, self.config.multiple
        if c.budget == "ratio":
            return round_rank(c.value * breakeven_rank(n_in, n_out), m, n_in, n_out)
        if c.budget == "rank":
            return round_rank(c.value, m, n_in, n_out)
        if c.budget == "energy":
            k = int(np.searchsorted(self.spectra[s.name].energy, c.value - 1e-12) + 1)
            return min(min(n_in, n_out), m * int(np.ceil(k / m)))
        return None

    def why_dense(self, s: Site, cand: int | None) -> str:
        n_in, n_out = s.weight.shape
        if self.config.budget in ("max_drop", "speedup"):
            return f"the {self.config.budget} budget"
        if cand is not None and cand >= breakeven_rank(n_in, n_out):
            return f"rank {cand} >= break-even {breakeven_rank(n_in, n_out):.0f}: no saving"
        how = "measured" if self.table.measure else "estimated"
        return f"rank {cand}: {how} no faster than dense on the target"

    def grid(self, s: Site) -> list[int]:
        n_in, n_out = s.weight.shape
        r_star = breakeven_rank(n_in, n_out)
        ranks = sorted({round_rank(f * r_star, self.config.multiple, n_in, n_out) for f in GRID})
        return [r for r in ranks if self.gate(s, r)]

    def choose(self) -> dict[str, int | None]:
        b = self.config.budget
        if b in ("ratio", "rank", "energy"):
            return {s.name: self.gate(s, self.candidate_rank(s)) for s in self.sites}
        if b == "speedup":
            return self._speedup()
        return self._max_drop()

    # -- speedup: greedy, least error per millisecond saved ---------------------------------------
    def _speedup(self) -> dict[str, int | None]:
        options = {s.name: self.grid(s) for s in self.sites}
        ranks: dict[str, int | None] = {s.name: None for s in self.sites}
        total_dense = sum(self.ms(s, None) for s in self.sites)
        target, total = total_dense / self.config.value, total_dense
        while total > target:
            best = None
            for s in self.sites:
                now = ranks[s.name]
                lower = [r for r in options[s.name] if now is None or r < now]
                if not lower:
                    continue
                r = max(lower)
                saved = self.ms(s, now) - self.ms(s, r)
                if saved <= 0:
                    continue
                spec = self.spectra[s.name]
                cost = spec.error(r) ** 2 - (spec.error(now) ** 2 if now else 0.0)
                if best is None or cost / saved < best[0]:
                    best = (cost / saved, s, r, saved)
            if best is None:
                log.warning("lowrank: speedup=%g is not reachable; best %.2fx", self.config.value, total_dense / total)
                break
            _, s, r, saved = best
            ranks[s.name] = r
            total -= saved
        return ranks

    def ms(self, s: Site, r: int | None) -> float:
        n_in, n_out = s.weight.shape
        return self.table.dense(s.tokens, n_in, n_out) if r is None else self.table.factored(s.tokens, n_in, r, n_out)

    # -- max_drop: bisection over the per-layer error threshold -------------------------------------
    def _max_drop(self) -> dict[str, int | None]:
        options = {s.name: self.grid(s) for s in self.sites}
        errors = sorted({self.spectra[s.name].error(r) for s in self.sites for r in options[s.name]})

        def ranks_at(t: float) -> dict[str, int | None]:
            out = {}
            for s in self.sites:
                ok = [r for r in options[s.name] if self.spectra[s.name].error(r) <= t]
                out[s.name] = min(ok) if ok else None
            return out

        lo, hi, best = 0, len(errors) - 1, {s.name: None for s in self.sites}
        steps = int(np.ceil(np.log2(len(errors) + 1))) if errors else 0
        step = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            ranks = ranks_at(errors[mid])
            factors = {s.binding.var: self.spectra[s.name].factors(r) for s in self.sites if (r := ranks[s.name])}
            drop = self.model_error(factors)["drop"]
            step += 1
            self.say("searching ranks", step, steps)
            if drop <= self.config.value:
                best, lo = ranks, mid + 1
            else:
                hi = mid - 1
        return best

    # -- evaluation ----------------------------------------------------------------------------
    def _run(self, func) -> list[np.ndarray]:
        run = HostFunction(tvm.IRModule({"main": func}), self.build, self.names)
        return [self.float_run.trim_first(run.first(sample), sample) for sample in self.samples]

    def model_error(self, factors: dict) -> dict:
        """The budget's drop of the model with ``factors`` against float on the samples: top-1
        changes (2-D outputs) or relative L2 error; both reported."""
        if self._reference is None:
            self._reference = [self.float_run.first_output(x) for x in self.samples]
        return output_drop(self._reference, self._run(factorize_function(self.func, factors)))

    # -- refit -----------------------------------------------------------------------------------
    def refit(self, factors: dict) -> dict:
        """Refit each factorized layer's outer factor to the float outputs from its real inputs.
        The float run returns every site's input in ``xs`` order; the factorized model is built to
        return its own inputs of the same sites in the same order."""
        sites = [s for s in self.sites if s.binding.var in factors]
        pos = {v: i for i, v in enumerate(self.xs)}
        crun = self.float_run.like(tvm.IRModule({"main": factorize_function(self.func, factors, self.xs)}), self.xs)
        c_new = {s.name: 0.0 for s in sites}
        cross = {s.name: 0.0 for s in sites}
        for i, sample in enumerate(self.samples):
            floats, comp = self.float_run(sample), crun(sample)
            for s in sites:
                x = floats[pos[s.x]].reshape(-1, s.weight.shape[0]).astype(np.float64)
                xn = comp[pos[s.x]].reshape(-1, s.weight.shape[0]).astype(np.float64)
                c_new[s.name] = c_new[s.name] + xn.T @ xn
                cross[s.name] = cross[s.name] + xn.T @ x
            self.say("refitting", i + 1, len(self.samples))
        out = dict(factors)
        for s in sites:
            p, _ = factors[s.binding.var]
            out[s.binding.var] = (p, refit_outer(p, s.weight, c_new[s.name], cross[s.name]))
        return out
