"""Turning a run's report (plain data from ``runner.run``) into the printed table, the
JSON and Markdown files, a PNG chart (when matplotlib is installed), and the full table
on the docs' benchmarks page (docs/benchmarks.md)."""

import importlib.util
import json
import re
from pathlib import Path

from bench import distributed

COLUMNS = ("workload", "dtype", "target", "median", "vs NumPy", "rate", "of ceiling",
           "vs GEMMs", "spread", "others", "faults", "max err", "compile", "flags")
TABLE_START = "<!-- bench-table:start -->"
TABLE_END = "<!-- bench-table:end -->"


def seconds(s):
    if s is None:
        return ""
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _rate(row):
    if row["rate"] is None:
        return ""
    if row["unit"] in ("GFLOP/s", "GB/s"):
        return f"{row['rate']:.1f} {row['unit']}"
    return f"{row['rate']:,.0f} {row['unit']}"


def cells(row):
    """A report row as the table's text cells."""
    def number(value, fmt):
        return "" if value is None else format(value, fmt)

    ceiling = (f"{row['ceiling_pct']:.0f}% {row['ceiling_kind']}"
               if row["ceiling_pct"] is not None else "")
    if row.get("add_pct") is not None:  # 2-in-1-out rows: also against c = a + b
        ceiling += f", {row['add_pct']:.0f}% add"
    error = "" if row["max_error"] is None else (
        "0" if row["max_error"] == 0 else f"{row['max_error']:.1e}")
    return (row["workload"], row["dtype"], row["target"], seconds(row["median_s"]),
            number(row["speedup"], ".2f") + ("x" if row["speedup"] is not None else ""),
            _rate(row), ceiling,
            number(row["baseline_ratio"], ".2f") + ("x" if row["baseline_ratio"] else ""),
            "" if row["spread"] is None else f"{100 * row['spread']:.0f}%",
            number(row["other_load"], ".2f"), number(row["faults_per_call"], ".0f"), error,
            seconds(row["compile_s"]), " ".join(row["flags"]))


def text_table(rows):
    """Aligned columns for the terminal, a blank line between workload groups."""
    header, rule, *body = aligned(COLUMNS, [cells(r) for r in rows]).split("\n")
    lines, previous = [header, rule], None
    for row, line in zip(rows, body):
        if previous is not None and row["group"] != previous:
            lines.append("")
        previous = row["group"]
        lines.append(line)
    return "\n".join(lines)


def aligned(header, body):
    """Plain aligned columns."""
    widths = [max(len(c) for c in column) for column in zip(header, *body)]
    lines = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def markdown_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |"
              for line in body]
    return "\n".join(lines)


def problems(report):
    """Lines naming every row flagged WRONG, DIFF or ERROR, with the reason."""
    found = [f"{r['workload']} [{r['dtype']}] on {r['target']}: {r['problem']}"
             for r in report["rows"] if r["problem"]]
    parallel = report.get("distributed")
    if isinstance(parallel, str) and parallel.startswith("ERROR"):
        found.append(f"{distributed.NAME}: {parallel}")
    return found


def summary(report):
    """The run's circumstances in a few lines: date, machine, command, versions, threads."""
    env = report["environment"]
    pools = env["thread_pools"]
    if isinstance(pools, list):
        pools = ", ".join(f"{p['internal_api']} {p['version']} ({p['num_threads']} threads)"
                          for p in pools)
    load = [env.get("load_average_start"), env["load_average"]]
    lines = [
        f"date: {env['date']}; command: `{report['command']}`",
        f"machine: {env['cpu']}, {env['cpus_usable']} usable CPUs; load average (1 min) "
        + " at start, ".join("?" if x is None else f"{x[0]:.1f}" for x in load) + " at end",
        f"Python {env['python']}, NumPy {env['numpy']}, fastnn {env['fastnn']} "
        f"(commit {env['git_commit']})" + "".join(
            f", {name} {env[name]['version']}" for name in ("numba", "torch", "cupy")
            if isinstance(env.get(name), dict)),
        f"thread pools: {pools}",
    ]
    if "torch" in env:
        lines.append(f"PyTorch threads: {env['torch']['threads']} intra-op, "
                     f"{env['torch']['interop_threads']} inter-op")
    if "numba" in env and isinstance(env["numba"], dict):
        lines.append(f"Numba threads: {env['numba']['threads']}, threading layer "
                     f"{env['numba']['threading_layer']}")
    if env["environment"]:
        lines.append("environment: " + ", ".join(f"{k}={v}" for k, v in env["environment"].items()))
    plan = report["plan"]
    def count(flag):
        return sum(flag in r["flags"] for r in report["rows"])

    lines.append(f"timing: median of up to {plan['rounds']} rounds per target (at least "
                 f"{plan['min_rounds']}), each sample >= {plan['sample_seconds'] * 1e3:g} ms "
                 f"after {plan['settle_seconds']:g} s idle, targets alternating round by round")
    lines.append(f"trust: {count('noisy')} of {len(report['rows'])} rows 'noisy' (IQR/median "
                 f"above {report['max_spread']:.0%}), {count('busy')} 'busy' (other processes "
                 f"used more than {report['max_other_load']:g} cores meanwhile: column "
                 f"'others'); do not trust flagged rows")
    return lines


def ceiling_lines(report):
    def busy(c):
        return " (busy)" if (c["other_load"] or 0.0) > report["max_other_load"] else ""

    return [f"{c['kind']} {'x'.join(map(str, c['shape']))} {c['dtype']} on {c['library']}: "
            f"{c['rate']:.1f} {'GFLOP/s' if c['kind'] == 'gemm' else 'GB/s'}{busy(c)}"
            for c in report["ceilings"]]


def startup_body(report):
    return [(s["backend"], s.get("how", "op-by-op step"), seconds(s["cold"]),
             seconds(s["cached"]), s["repeats"]) for s in report["startup"]]


STARTUP_HEADER = ("backend", "first step", "cold start", "cached start", "runs")


DISTRIBUTED_TITLE = ("Data-parallel (mpiexec): one epoch of the MLP 784-256-256-10, SGD, "
                     "B=128, float32, median of the timed epochs; efficiency = samples/s "
                     "over ranks x the 1-rank data-parallel rate")


def distributed_body(report):
    """The distributed rows as table cells; a string if they could not run."""
    found = report.get("distributed") or []
    return found if isinstance(found, str) else [distributed.cells(r) for r in found]


def text(report):
    """The whole report as printed to the terminal."""
    parts = summary(report) + ["", "ceilings: " + "; ".join(ceiling_lines(report)), "",
                               text_table(report["rows"])]
    body = distributed_body(report)
    if body:
        parts += ["", f"{DISTRIBUTED_TITLE}:",
                  body if isinstance(body, str) else aligned(distributed.COLUMNS, body)]
    if report["startup"]:
        parts += ["", "start-up (import fastnn + build MLP + first training step, fresh "
                      "process): " + "; ".join(f"{b} ({how}): cold {c}, cached {w}"
                                               for b, how, c, w, _ in startup_body(report))]
    parts += ["", *(["problems:"] + problems(report) if problems(report) else [])]
    return "\n".join(parts).rstrip() + "\n"


def markdown(report):
    """The report as Markdown: the full table of docs/benchmarks.md."""
    parts = ["\n".join(f"- {line}" for line in summary(report)),
             "Ceilings measured in the same run: " + "; ".join(ceiling_lines(report)) + ".",
             markdown_table(COLUMNS, [cells(r) for r in report["rows"]])]
    body = distributed_body(report)
    if body:
        parts += [f"{DISTRIBUTED_TITLE}:", body if isinstance(body, str)
                  else markdown_table(distributed.COLUMNS, body)]
    if report["startup"]:
        parts += ["Start-up in a fresh process (import fastnn, build the MLP, first training "
                  "step; cold = empty NUMBA_CACHE_DIR, cached = the same directory again):",
                  markdown_table(STARTUP_HEADER, startup_body(report))]
    if problems(report):
        parts += ["Problems:\n\n" + "\n".join(f"- {p}" for p in problems(report))]
    return "\n\n".join(parts) + "\n"


def chart(report, path):
    """A bar chart of each target's speed relative to NumPy; False if no matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [t for t in report["targets"] if t != "numpy"]
    names = list(dict.fromkeys(f"{r['workload']} [{r['dtype']}]" for r in report["rows"]))
    speed = {(f"{r['workload']} [{r['dtype']}]", r["target"]): r["speedup"]
             for r in report["rows"]}
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.22 * len(names) * max(1, len(targets))))
    height = 0.8 / max(1, len(targets))
    for k, target in enumerate(targets):
        values = [speed.get((n, target)) or 0.0 for n in names]
        ax.barh([i + k * height for i in range(len(names))], values, height=height, label=target)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speed relative to the NumPy backend (higher is faster)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(report, out_dir):
    """report.json, report.md and (with matplotlib) report.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    written = [out / "report.json", out / "report.md"]
    if chart(report, out / "report.png"):
        written.append(out / "report.png")
    return written


def update_page(path, report):
    """Replace the measured table of a Markdown page (between the bench-table markers),
    such as docs/benchmarks.md."""
    path = Path(path)
    page = path.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(page):
        raise ValueError(f"{path} has no {TABLE_START} ... {TABLE_END} block to replace; "
                         f"add the two markers where the table belongs")
    block = f"{TABLE_START}\n{markdown(report)}{TABLE_END}"
    path.write_text(pattern.sub(lambda _: block, page, count=1))
