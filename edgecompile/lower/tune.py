"""Optional tuning: MetaSchedule over a model's kernels, with a database reused across models.

``edgecompile compile --tune N`` runs up to ``N`` MetaSchedule trials over the model's fused
kernels (the same tasks our pipeline schedules) and stores the results in a JSON database per
target under ``~/.cache/edgecompile/tuning/`` (``--tuning-db DIR`` to choose). Before searching,
each kernel's schedule from our own rules is measured with MetaSchedule's own builder and runner
and recorded too, so a tuned schedule is only used where it measured faster than ours; kernels
already in the database are not tuned again, so another model sharing kernels (same shapes)
starts from them. The build then keeps the tuned model only if it is faster end to end. The database is appended to as
trials finish: interrupting a run (Ctrl-C) keeps what was found, and the compile goes on with it.
At build time, :func:`apply_database_pass` picks each kernel's best record; kernels without one
get our rules.

Decisions: the cost model is xgboost when installed (``pip install xgboost``) and random search
otherwise; builds run in one worker with a generous timeout (TVM's 30 s default times out on a
loaded 2-core machine, and each build worker imports TVM).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def default_db_root() -> Path:
    return Path(os.environ.get("EDGECOMPILE_TUNING_DB", Path.home() / ".cache" / "edgecompile" / "tuning"))


def db_dir(root: Path, target) -> Path:
    """One database per target (its full description, so an -mcpu change gets a new one)."""
    text = str(target)
    kind = target.kind.name
    cpu = str(target.attrs.get("mcpu", "")) or str(target.attrs.get("arch", "")) or "generic"
    return Path(root) / f"{kind}-{cpu}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _database(path: Path):
    from tvm.s_tir import meta_schedule as ms

    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(
        path_workload=str(path / "database_workload.json"),
        path_tuning_record=str(path / "database_tuning_record.json"),
        allow_missing=True,
    )


def _seed_with_rules(tasks, target, db, builder, runner) -> int:
    """Measure our rules' schedule of every new task with MetaSchedule's own builder and runner
    (so it competes with tuned candidates on equal terms) and record it; returns how many."""
    from tvm.s_tir import meta_schedule as ms

    from edgecompile.lower.schedules import cpu_rules

    candidates = []
    for task in tasks:
        mod = task.dispatched[0]
        func = mod["main"]
        sch = next((s for rule in cpu_rules() if (s := rule.apply(func, target, False)) is not None), None)
        workload = db.commit_workload(mod)
        if sch is not None:
            candidates.append((sch, workload, ms.arg_info.ArgInfo.from_prim_func(func)))
    if not candidates:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch, _, _ in candidates])
    runnable = [(c, b) for c, b in zip(candidates, built) if b.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", c[2]) for c, b in runnable])
    seeded = 0
    for ((sch, workload, args_info), _), future in zip(runnable, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            secs = [float(x) for x in result.run_secs]
            db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, secs, target, args_info))
            seeded += 1
    return seeded


def tune(
    mod,
    target,
    trials: int,
    root: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Tune ``mod`` (a fused Relax module, as our pipeline produces it) for ``target``.

    ``progress(done, total, elapsed_s)`` is called after every measured batch. Returns the
    database directory. Ctrl-C stops the search and keeps the records found so far.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.tune import tune_tasks

    path = db_dir(root or default_db_root(), target)
    db = _database(path)
    tasks = [t for t in ms.relax_integration.extract_tasks(mod, target) if t.dispatched]
    fresh = [t for t in tasks if not db.has_workload(t.dispatched[0])]
    log.info("%d kernels, %d not in the tuning database %s", len(tasks), len(fresh), path)
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")  # build workers: no torch import
    builder = ms.builder.LocalBuilder(timeout_sec=300, max_workers=1)
    runner = ms.runner.LocalRunner(timeout_sec=60)
    _seed_with_rules(fresh, target, db, builder, runner)
    if not fresh or trials <= 0:
        return path
    start = time.perf_counter()
    done = [0]

    @derived_object
    class _Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            done[0] += len(measure_candidates)
            if progress:
                progress(min(done[0], trials), trials, time.perf_counter() - start)

    try:
        import xgboost  # noqa: F401

        cost_model = "xgb"
    except ImportError:
        cost_model = "random"
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(fresh, str(path))
    try:
        tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(path),
            max_trials_global=trials,
            num_trials_per_iter=min(64, max(4, trials // max(1, len(fresh)))),
            builder=builder,
            runner=runner,
            database=db,
            cost_model=cost_model,
            measure_callbacks=ms.measure_callback.MeasureCallback.create("default") + [_Progress()],
        )
    except KeyboardInterrupt:
        log.warning("tuning interrupted after %d trials; the records found are kept in %s", done[0], path)
    return path


def apply_database_pass(path: Path):
    """The pass that schedules every kernel with a record in the database at ``path``."""
    from tvm import relax

    return relax.transform.MetaScheduleApplyDatabase(str(path))
