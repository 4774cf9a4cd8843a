"""What each `attnbench` command does, from its parsed arguments; each returns the exit status."""

from __future__ import annotations

import argparse
from pathlib import Path

import impls
from harness.cli.config import CHECK_KEYS, check_settings
from harness.cli.options import (
    UsageError,
    parse_positive_int,
    parse_threshold,
    resolve_impls,
)
from harness.present.tables import format_table
from harness.results.rundir import RunDir, RunDirError
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
    settings = check_settings({key: getattr(ns, key) for key in CHECK_KEYS})
    selected = resolve_impls(list(settings["impl"]) or None, only_available=False)
    dtypes, seed = settings["dtype"], settings["seed"]
    n, d = parse_positive_int("--n", ns.n), parse_positive_int("--d", ns.d)
    lead = (settings["batch"], settings["heads"])
    kv_heads = settings["kv_heads"] or lead[1]  # 0: as many as the query heads
    n_q = settings["n_q"] or n
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
    from harness.cli.scaffold import create_implementation

    try:
        path = create_implementation(ns.name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path}")
    print(f"check it with: attnbench check --impl {ns.name}")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from harness.cli.config import FLAGS, QUICK, apply, load_config, read_toml, resume_config
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
    from harness.present.plots import plot_runs

    n_fixed = None if ns.n_fixed is None else parse_positive_int("--n-fixed", ns.n_fixed)
    written, notes = plot_runs(ns.dirs, ns.out, ns.baseline, n_fixed)
    for note in notes:
        print(note)
    print(f"wrote {len(written)} files to {written[0].parent}")
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from harness.present.report import write_report

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
    from harness.present.comparison import run_compare

    threshold = parse_threshold(ns.threshold)
    table, lines, _ = run_compare(ns.dir_a, ns.dir_b, threshold, ns.out, ns.baseline)
    print("\n".join(lines))
    regressed = bool(table["regression"].any())
    return 1 if ns.fail_on_regression and regressed else 0
