"""Regenerate edgecompile/frontend/onnx_support.json from the ONNX conformance node cases.

Run after changing the TVM pin or the ONNX import path:  python tools/gen_onnx_support.py
It writes the table that `edgecompile inspect` reads and prints the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.progress import track

from edgecompile.frontend.conformance import load_node_cases, run_cases, summarize
from edgecompile.frontend.op_support import SUPPORT_FILE


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--output", type=Path, default=SUPPORT_FILE)
    args = ap.parse_args()
    import onnx
    import tvm

    t0 = time.time()
    cases = load_node_cases()
    print(f"{len(cases)} cases ({time.time() - t0:.0f} s to build)")
    results = run_cases(
        cases, args.jobs, progress=lambda it, n: track(it, total=n, description="running ONNX node cases")
    )
    ops = summarize(results)
    table = {
        "generated_with": {"tvm": tvm.__version__, "onnx": onnx.__version__},
        "cases": len(results),
        "passed": sum(r.status == "pass" for r in results),
        "ops": ops,
    }
    args.output.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    full = sum(e["passed"] == e["total"] for e in ops.values())
    print(
        f"{table['passed']}/{table['cases']} cases pass; {full}/{len(ops)} op versions fully pass "
        f"({time.time() - t0:.0f} s) -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
