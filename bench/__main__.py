"""``python -m bench``: run every workload on every backend that runs here (and on
PyTorch eager when installed), print one table, and write report.json, report.md and
report.png (with matplotlib) to --out.

Exits with status 1 when any row is WRONG (its check failed), DIFF (it differs from
NumPy beyond the workload's tolerance) or ERROR (it raised).
"""

import argparse
import shlex
import sys

from bench import report, runner, workloads


def _list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 rounds: a smoke run (CI uses it)")
    parser.add_argument("--backends", type=_list, default=None,
                        help="comma-separated fastnn backends (default: every one that runs "
                             "here; numpy, the reference, is always included)")
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="leave out the PyTorch eager column even when torch is installed")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every pool: BLAS, OpenMP, PyTorch, Numba (default: "
                             "each library's own; recorded either way)")
    parser.add_argument("--groups", type=_list, default=None,
                        help=f"comma-separated groups out of: {', '.join(workloads.GROUPS)}")
    parser.add_argument("--filter", dest="pattern", default=None,
                        help="only workloads whose name contains this text")
    parser.add_argument("--dtypes", type=_list, default=None, help="float32 and/or float64")
    parser.add_argument("--rounds", type=int, default=None,
                        help="samples per target and workload (default 9; --quick 3)")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds idle before each sample so the previous target's "
                             "thread pools park (default 0.15; --quick 0)")
    parser.add_argument("--max-spread", type=float, default=0.15,
                        help="flag rows whose IQR/median exceeds this (default 0.15)")
    parser.add_argument("--max-other-load", type=float, default=0.25,
                        help="flag rows measured while other processes used more cores than "
                             "this (default 0.25)")
    parser.add_argument("--retries", type=int, default=None,
                        help="measure a workload flagged busy again, up to this many times, "
                             "keeping the quietest attempt (default 2; --quick 0)")
    parser.add_argument("--no-startup", dest="startup", action="store_false",
                        help="skip the cold/cached start-up runs")
    parser.add_argument("--out", default="bench-results",
                        help="directory for report.json/.md/.png (default bench-results)")
    parser.add_argument("--page", default=None,
                        help="also replace the measured table (between the bench-table "
                             "markers) in this Markdown page: docs/benchmarks.md")
    args = parser.parse_args(argv)
    for option, least in (("rounds", 1), ("threads", 1), ("retries", 0), ("settle", 0)):
        if getattr(args, option) is not None and getattr(args, option) < least:
            parser.error(f"--{option} must be at least {least}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    config = runner.Config(
        quick=args.quick, backends=args.backends, torch=args.torch,
        threads=args.threads, groups=args.groups, pattern=args.pattern,
        dtypes=args.dtypes, rounds=args.rounds, settle=args.settle, max_spread=args.max_spread,
        max_other_load=args.max_other_load, retries=args.retries,
        startup=args.startup, command=shlex.join(["python", "-m", "bench", *argv]))
    try:
        result = runner.run(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, RuntimeError) as error:  # bad names, unavailable backends, no match
        print(f"python -m bench: error: {error}", file=sys.stderr)
        return 2
    print(report.text(result), end="")
    for path in report.write(result, args.out):
        print(f"wrote {path}", file=sys.stderr)
    if args.page:
        report.update_page(args.page, result)
        print(f"updated {args.page}", file=sys.stderr)
    return 1 if report.problems(result) else 0


if __name__ == "__main__":
    sys.exit(main())
