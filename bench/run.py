"""`make bench`: the performance benchmarks, run against PostgreSQL on this machine.

    python bench/run.py [ingest] [metrics] [dashboard] [alerts] [analytics] [load] [--seconds 20] [--workers 2]
                        [--reuse] [--load-seconds 300] [--load-rate TRACES_PER_S] [--load-readers 3]

Each benchmark prints its figures and writes them as JSON to bench/results/. `load` takes about three
times --load-seconds (a probe, a sustained and an overload phase, each followed by the drain).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alerts
import analytics
import dashboard
import ingest
import load
import metrics

BENCHMARKS = {
    "ingest": ingest.run,
    "metrics": metrics.run,
    "dashboard": dashboard.run,
    "alerts": alerts.run,
    "analytics": analytics.run,
    "load": load.run,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names", nargs="*", default=list(BENCHMARKS), help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each load phase runs")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/perfops_bench",
        help="a scratch database (dropped)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="metrics: keep the seeded 10M-trace database of an earlier run"
    )
    parser.add_argument("--metrics-database-url", default=metrics.DATABASE, help="metrics: its scratch database")
    parser.add_argument("--load-seconds", type=float, default=300.0, help="load: how long each load phase runs")
    parser.add_argument(
        "--load-rate",
        type=float,
        default=None,
        help="load: the sustained phase's traces/s (default: 80%% of the probe)",
    )
    parser.add_argument("--load-readers", type=int, default=load.READERS, help="load: dashboard reader threads")
    parser.add_argument("--load-database-url", default=load.DATABASE, help="load: its scratch database (dropped)")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = {}
    for name in args.names:
        results[name] = BENCHMARKS[name](args)
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
