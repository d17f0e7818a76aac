"""`make bench`: run every benchmark script, each in a fresh process, and print its table.

Each script in this folder defines ``main(quick: bool) -> None``. ``--quick`` runs small sizes
(a few minutes in all); the default runs the sizes the issues name. ``--only funnel,kpis``
picks scripts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("simulate", "ingest", "funnel", "kpis", "collector", "customers", "dashboard")


def scripts() -> list[str]:
    found = {p.stem for p in HERE.glob("*.py") if p.stem not in ("run", "__init__", "common")}
    return [s for s in ORDER if s in found] + sorted(found - set(ORDER))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", default="", help="comma-separated script names")
    args = parser.parse_args()
    chosen = [s for s in scripts() if not args.only or s in args.only.split(",")]
    failed = []
    for name in chosen:
        print(f"\n=== benchmarks/{name}.py {'(quick)' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            f"import {name} as b; b.main(quick={args.quick!r})"
        )
        rc = subprocess.call([sys.executable, "-c", code])
        print(f"--- {name}: {time.perf_counter() - started:.1f} s wall, exit {rc}", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
