"""``python -m bench [--only NAME[,NAME]] [--strict] [--keep]``: run the benchmarks and
print one results table. Exit status: 2 when a benchmark could not run (an ERROR row),
else 1 when ``--strict`` is given and a goal is missed, else 0."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import BENCHMARKS
from ._support import Report, Row


def _run_one(name: str, workdir: Path) -> tuple[Report, float]:
    module = importlib.import_module(f"bench.{name}")
    print(f"== {name}: {module.GOAL}", flush=True)
    started = time.perf_counter()
    try:
        report = module.run(workdir / name)
    except Exception:
        report = Report()
        report.error(traceback.format_exc().rstrip())
    elapsed = time.perf_counter() - started
    for row in report.rows:
        print(f"   {_verdict(row):4}  {row.metric}: {row.value}", flush=True)
    return report, elapsed


def _host() -> str:
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return f"{os.cpu_count()} CPUs, load average {load}; Python {sys.version.split()[0]}"


def _verdict(row: Row) -> str:
    if row.error:
        return "ERROR"
    if row.ok is None:
        return ""
    return "PASS" if row.ok else "FAIL"


def _table(results: list[tuple[str, Report, float]]) -> str:
    header = ("benchmark", "metric", "value", "goal", "result")
    lines: list[tuple[str, ...]] = []
    for name, report, _elapsed in results:
        for i, row in enumerate(report.rows):
            lines.append((name if i == 0 else "", row.metric, row.value, row.goal,
                          _verdict(row)))
    widths = [max(len(header[c]), *(len(line[c]) for line in lines)) if lines
              else len(header[c]) for c in range(len(header))]
    widths[2] = min(widths[2], 80)

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(line)).rstrip()

    out = [fmt(header), fmt(tuple("-" * w for w in widths))]
    out.extend(fmt(line) for line in lines)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default="",
                        help=f"comma-separated benchmarks to run ({', '.join(BENCHMARKS)})")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a goal is missed (a benchmark that cannot run "
                             "always exits 2)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (data dirs, node files, logs)")
    parser.add_argument("--tmp", default=None,
                        help="parent directory for the work directory (default: $TMPDIR)")
    parser.add_argument("--log-level", default="ERROR",
                        help="log level of the in-process panels (default ERROR)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    workdir = Path(tempfile.mkdtemp(prefix="hvp-bench-", dir=args.tmp))
    print(f"host before: {_host()}", flush=True)
    results: list[tuple[str, Report, float]] = []
    try:
        for name in names:
            report, elapsed = _run_one(name, workdir)
            results.append((name, report, elapsed))
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"host after: {_host()}  (timings are noisy when the load exceeds the CPUs)")
    print()
    print(_table(results))
    for name, report, elapsed in results:
        print(f"\n[{name}] ran in {elapsed:.1f} s")
        for note in report.notes:
            print("  - " + note.replace("\n", "\n    "))
    errors = [name for name, report, _ in results if report.could_not_run]
    failed = [f"{name}: {row.metric}" for name, report, _ in results
              for row in report.rows if row.ok is False and not row.error]
    print()
    for name in errors:
        print(f"  ERROR  {name}: the benchmark could not run (see its notes above)")
    if failed:
        print(f"GOALS MISSED ({len(failed)}):")
        for item in failed:
            print(f"  FAIL  {item}")
    elif not errors:
        print("ALL GOALS MET")
    return exit_status(errors, failed, args.strict)


def exit_status(errors: list[str], failed: list[str], strict: bool) -> int:
    """2 when a benchmark could not run, 1 for a missed goal under ``--strict``, else 0."""
    if errors:
        return 2
    return 1 if (failed and strict) else 0


if __name__ == "__main__":
    sys.exit(main())
