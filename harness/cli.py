"""The `attnbench` command (also `python -m harness`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import impls
from harness.config import add_run_flags, flag_name
from harness.options import (
    UsageError,
    parse_dtype_list,
    parse_impl_list,
    parse_non_negative_int,
    parse_positive_int,
    parse_threshold,
    resolve_impls,
)
from harness.results.rundir import RunDir, RunDirError
from harness.runs import NotInRunError
from harness.tables import format_table
from harness.worker import checking
from harness.worker.inputs import make_qkv


def cmd_list(ns: argparse.Namespace) -> int:
    rows = []
    for impl in impls.registry().values():
        reason = impl.unavailable_reason()
        rows.append(
            {
                "name": impl.name,
                "device": impl.device,
                "dtypes": ",".join(impl.dtypes),
                "causal": "yes" if impl.supports_causal else "no",
                "available": "yes" if reason is None else f"no: {reason}",
                "description": impl.description,
            }
        )
    print(format_table(rows))
    return 0


def cmd_check(ns: argparse.Namespace) -> int:
    selected = parse_impl_list(ns.impl, only_available=False)
    dtypes = parse_dtype_list(ns.dtype)
    n, d = parse_positive_int("--n", ns.n), parse_positive_int("--d", ns.d)
    lead = (parse_positive_int("--batch", ns.batch), parse_positive_int("--heads", ns.heads))
    kv_heads = lead[1] if ns.kv_heads is None else parse_positive_int("--kv-heads", ns.kv_heads)
    n_q = n if ns.n_q is None else parse_positive_int("--n-q", ns.n_q)
    seed = parse_non_negative_int("--seed", ns.seed)
    rows, all_ok, unchecked = [], True, set()
    for dtype in dtypes:
        q, k, v = make_qkv(n_q, n, d, lead=lead, kv_heads=kv_heads, dtype=dtype, seed=seed)
        try:
            args = impls.check_attention_args(q, k, v, causal=ns.causal)
        except ValueError as exc:
            raise UsageError(f"--kv-heads: {exc}") from None
        for impl in selected:
            row = {"impl": impl.name, "dtype": dtype, "causal": ns.causal, "n": n, "d": d}
            if n_q != n or kv_heads != lead[1]:
                row.update(n_q=n_q, kv_heads=kv_heads)
            reason = impl.unavailable_reason()
            if reason is not None:
                if ns.impl is not None:  # asked for by name: not checking it is a failure
                    unchecked.add(impl.name)
                rows.append({**row, "status": f"NOT CHECKED: {reason}"})
                continue
            try:
                agreement = checking.check_implementation(impl, args)
            except Exception as exc:  # noqa: BLE001 - a failing implementation is a finding
                all_ok = False
                rows.append({**row, "status": f"FAILED: {type(exc).__name__}: {exc}"})
                continue
            all_ok &= agreement.ok
            rows.append(
                {
                    **row,
                    "max_abs_err": f"{agreement.max_abs_err:.3g}",
                    "max_rel_err": f"{agreement.max_rel_err:.3g}",
                    "tolerance": f"{agreement.tolerance:.3g}",
                    "where (b,i,j)": str(agreement.where),
                    "status": "agrees" if agreement.ok else f"DISAGREES {agreement.problem or ''}",
                }
            )
    print(format_table(rows))
    if unchecked:
        print(f"not checked, though asked for: {', '.join(sorted(unchecked))} (reasons above)")
    if not all_ok:
        print("some implementations disagree or failed")
    elif not unchecked:
        checked = {row["impl"] for row in rows if "max_abs_err" in row}
        print(f"all {len(checked)} checked implementations agree")
    return 0 if all_ok and not unchecked else 1


def cmd_new(ns: argparse.Namespace) -> int:
    from harness.scaffold import create_implementation

    try:
        path = create_implementation(ns.name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path}")
    print(f"check it with: attnbench check --impl {ns.name}")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from harness.config import FLAGS, QUICK, apply, load_config, read_toml, resume_config
    from harness.sweep.run import measure_run, new_run, resume_run

    given = {key: getattr(ns, key) for key in FLAGS if getattr(ns, key) is not None}
    if ns.resume:
        if ns.out:
            raise UsageError("--out: not with --resume (the run directory is the one resumed)")
        if ns.preset:
            raise UsageError("--preset: not with --resume (the run keeps its own settings)")
        config_values = read_toml(Path(ns.config)) if ns.config else {}
        if ns.quick:
            config_values = {**config_values, **QUICK}  # the order of a new run: --quick wins
        run = RunDir(Path(ns.resume))
        config, meta = resume_config(run, given, config_values)
        resume_run(run, meta)
    else:
        config = load_config({}, ns.config, preset=ns.preset)
        if ns.quick:
            config = apply(config, QUICK, "--quick")
        config = apply(config, given, "command line")
        names = [impl.name for impl in resolve_impls(config.impl or None, only_available=True)]
        try:
            run, meta = new_run(config, names, ns.out)
        except RunDirError as exc:
            raise UsageError(f"--out: {exc}") from None
    print(f"results: {measure_run(config, run, meta)}")
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    from harness.plotting import plot_runs

    n_fixed = None if ns.n_fixed is None else parse_positive_int("--n-fixed", ns.n_fixed)
    written, notes = plot_runs(ns.dirs, ns.out, ns.baseline, n_fixed)
    for note in notes:
        print(note)
    print(f"wrote {len(written)} files to {written[0].parent}")
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from harness.report import write_report

    n_fixed = None if ns.n_fixed is None else parse_positive_int("--n-fixed", ns.n_fixed)
    written, notes, headlines = write_report(ns.dir, ns.baseline, n_fixed, ns.out)
    for note in notes:
        print(note)
    print("findings:")
    for line in headlines:
        print(f"  - {line}")
    print(f"report: {', '.join(str(path) for path in written)}")
    return 0


def cmd_compare(ns: argparse.Namespace) -> int:
    from harness.compare import run_compare

    threshold = parse_threshold(ns.threshold)
    table, lines, _ = run_compare(ns.dir_a, ns.dir_b, threshold, ns.out)
    print("\n".join(lines))
    regressed = bool(table["regression"].any())
    return 1 if ns.fail_on_regression and regressed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnbench",
        description="Benchmark self-attention implementations on this machine.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="registered implementations and whether they can run here")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="compare implementations with a float64 reference")
    p.add_argument("--impl", default=None, help="comma-separated names (default: all)")
    p.add_argument("--n", default="1000", help="sequence length (default 1000)")
    p.add_argument("--d", default="80", help="head dimension (default 80)")
    p.add_argument("--dtype", default="float32,float64", help="float32, float64 or both")
    p.add_argument("--batch", default="1", help="batch size (default 1)")
    p.add_argument("--heads", default="1", help="query heads (default 1)")
    p.add_argument("--kv-heads", dest="kv_heads", help="key/value heads (default: --heads)")
    p.add_argument("--n-q", dest="n_q", help="query length (default: --n)")
    p.add_argument("--causal", action="store_true", help="apply the causal mask")
    p.add_argument("--seed", default="0", help="seed of the random inputs (>= 0)")
    p.set_defaults(func=cmd_check)

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

    p = sub.add_parser("plot", help="draw the plots of one or several run directories")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories (several: by machine)")
    p.add_argument("--baseline", help="implementation the speedups are relative to (numpy)")
    p.add_argument(
        "--n-fixed",
        dest="n_fixed",
        help="n of the time-vs-d plot (default: the largest n where most implementations are ok)",
    )
    p.add_argument("--out", help="directory for the PNG and SVG files (default: the first DIR)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="write DIR/report.md and DIR/report.html with the plots")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--baseline", help="implementation the speedups are relative to (numpy)")
    p.add_argument("--n-fixed", dest="n_fixed", help="n of the time-vs-d plot")
    p.add_argument(
        "--out",
        help="directory for the report and figures (default: DIR, or results/reports/<name> "
        "when git tracks DIR, as it does the committed sample)",
    )
    p.set_defaults(func=cmd_report)

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
    p.add_argument("--out", help="directory for compare.png/.svg (default: DIR_B)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("new", help="write impls/NAME.py from a working template")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_new)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
