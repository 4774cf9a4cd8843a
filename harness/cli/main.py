"""The `attnbench` command (also `python -m harness`): its parser, and the one place where errors
become messages."""

from __future__ import annotations

import argparse
import sys

from harness.analysis.runs import NotInRunError
from harness.cli.commands import (
    cmd_check,
    cmd_compare,
    cmd_list,
    cmd_new,
    cmd_plot,
    cmd_report,
    cmd_run,
)
from harness.cli.config import (
    CHECK_DEFAULTS,
    CHECK_KEYS,
    DEFAULT_BASELINE,
    add_run_flags,
    flag_name,
)
from harness.cli.options import UsageError
from harness.results.rundir import RunDirError

BASELINE_HELP = (
    f"implementation the speedups are relative to (default: the run's own, else {DEFAULT_BASELINE})"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnbench",
        description="Benchmark self-attention implementations on this machine.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_list, add_check, add_run, add_plot, add_report, add_compare, add_new):
        add(sub)
    return parser


def add_list(sub) -> None:
    p = sub.add_parser("list", help="registered implementations and whether they can run here")
    p.set_defaults(func=cmd_list)


def add_check(sub) -> None:
    p = sub.add_parser("check", help="compare implementations with a float64 reference")
    p.add_argument("--n", default="1000", help="sequence length (default 1000)")
    p.add_argument("--d", default="80", help="head dimension (default 80)")
    p.add_argument("--causal", action="store_true", help="apply the causal mask")
    add_run_flags(p, CHECK_KEYS, CHECK_DEFAULTS)
    p.set_defaults(func=cmd_check)


def add_run(sub) -> None:
    p = sub.add_parser("run", help="sweep implementations over n and d and record timings")
    add_run_flags(p)
    p.add_argument(
        "--preset",
        help="a named workload (settings; flags win): decode-gqa, prefill-gqa, fixed-tokens, "
        "or the project's [tool.attnbench.presets.NAME]",
    )
    p.add_argument("--out", help="run directory (default results/<timestamp>-<machine>)")
    p.add_argument("--resume", metavar="DIR", help="measure only the cases missing from DIR")
    p.add_argument("--config", metavar="FILE", help="TOML file of settings (keys as the flags)")
    p.add_argument("--quick", action="store_true", help="a first look: n up to 1024, d = 64")
    p.set_defaults(func=cmd_run)


def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw the plots of one or several run directories")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories (several: by machine)")
    p.add_argument("--baseline", help=BASELINE_HELP)
    p.add_argument(
        "--n-fixed",
        dest="n_fixed",
        help="n of the time-vs-d plot (default: the largest n where most implementations are ok)",
    )
    p.add_argument("--out", help="directory for the PNG and SVG files (default: the first DIR)")
    p.set_defaults(func=cmd_plot)


def add_report(sub) -> None:
    p = sub.add_parser("report", help="write DIR/report.md and DIR/report.html with the plots")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--baseline", help=BASELINE_HELP)
    p.add_argument("--n-fixed", dest="n_fixed", help="n of the time-vs-d plot")
    p.add_argument(
        "--out",
        help="directory for the report and figures (default: DIR, or results/reports/<name> "
        "when git tracks DIR, as it does the committed sample)",
    )
    p.set_defaults(func=cmd_report)


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="which cases got slower or faster from run A to run B")
    p.add_argument("dir_a", metavar="DIR_A", help="the earlier (reference) run directory")
    p.add_argument("dir_b", metavar="DIR_B", help="the later run directory")
    p.add_argument(
        "--threshold",
        default="5%",
        help="smallest change of B/A that counts, e.g. 5%% or 0.05 (default 5%%); a case is "
        "marked only when the whole 95%% interval of its change lies beyond it",
    )
    p.add_argument(
        "--fail-on-regression",
        dest="fail_on_regression",
        action="store_true",
        help="exit 1 when a case got slower, or was ok and now fails or disagrees",
    )
    p.add_argument(
        "--baseline",
        help="judge each case by its ratio to this implementation, measured in the same turns "
        "(default: the runs' own baseline)",
    )
    p.add_argument("--out", help="directory for compare.png/.svg (default: DIR_B)")
    p.set_defaults(func=cmd_compare)


def add_new(sub) -> None:
    p = sub.add_parser("new", help="write impls/NAME.py from a working template")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_new)


def usage_error(ns: argparse.Namespace, message) -> int:
    """Errors of the user's making, library errors included: one line, exit status 2."""
    print(f"attnbench {ns.command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except NotInRunError as exc:
        return usage_error(ns, f"{flag_name(exc.setting)}: {exc}")
    except (UsageError, RunDirError) as exc:
        return usage_error(ns, exc)
    except KeyboardInterrupt:
        print("attnbench: interrupted", file=sys.stderr)
        return 130
