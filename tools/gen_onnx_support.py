"""Regenerate edgecompile/frontend/onnx_support.json from the ONNX conformance node cases.

Run after changing the TVM pin or the ONNX frontend path:  python tools/gen_onnx_support.py
It prints the pass count per op version and writes the table that `edgecompile inspect` reads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.progress import track

from edgecompile.frontend.conformance import load_node_cases, run_case
from edgecompile.frontend.op_support import SUPPORT_FILE

_CASES = []


def _run(i: int):
    return run_case(_CASES[i])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=max(1, mp.cpu_count()))
    ap.add_argument("--output", type=Path, default=SUPPORT_FILE)
    args = ap.parse_args()
    import onnx
    import tvm

    t0 = time.time()
    _CASES.extend(load_node_cases())
    print(f"{len(_CASES)} cases ({time.time() - t0:.0f} s to build)", file=sys.stderr)
    with mp.get_context("fork").Pool(args.jobs) as pool:
        results = list(track(pool.imap(_run, range(len(_CASES)), chunksize=4), total=len(_CASES),
                             description="running ONNX node cases", console=None))
    ops: dict[str, dict] = defaultdict(lambda: {"passed": 0, "total": 0, "failing": []})
    for r in results:
        e = ops[f"{r.op_type}@{r.since_version}"]
        e["total"] += 1
        if r.status == "pass":
            e["passed"] += 1
        else:
            e["failing"].append(f"{r.name}: {r.status}: {r.detail}")
    table = {
        "generated_with": {"tvm": tvm.__version__, "onnx": onnx.__version__},
        "cases": len(results),
        "passed": sum(r.status == "pass" for r in results),
        "ops": {k: ops[k] for k in sorted(ops)},
    }
    args.output.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    full = sum(e["passed"] == e["total"] for e in ops.values())
    print(f"{table['passed']}/{table['cases']} cases pass; {full}/{len(ops)} op versions fully pass "
          f"({time.time() - t0:.0f} s) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
