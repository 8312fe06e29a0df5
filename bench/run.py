"""`make bench`: runs every benchmark script in turn; each prints its own figures and ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["pipeline_bench.py", "tryton_bench.py", "fanout_bench.py", "edge_pull_bench.py", "scale_bench.py"]


def main() -> int:
    failed = 0
    for script in BENCHMARKS:
        print(f"\n=== {script} ===", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / script)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
