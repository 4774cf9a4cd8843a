"""A run of `attnbench run`: its directory and meta.json, the sweep, the final table."""

from __future__ import annotations

import shlex
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import impls
from harness.analysis import stats
from harness.cli.config import SweepConfig
from harness.results import machine
from harness.results.rundir import RunDir, RunDirError
from harness.sweep import pool, probes
from harness.sweep.rounds import CI_MIN_ROUNDS, resolve_baseline, run_sweep
from harness.sweep.rows import UNSTABLE_WIDTH


def not_measured(names: list[str]) -> dict[str, str]:
    """Every registered implementation the run leaves out, with why (and how to install it)."""
    left_out = {}
    for impl in impls.registry().values():
        if impl.name not in names:
            left_out[impl.name] = impl.unavailable_reason() or "not asked for (--impl)"
    return left_out


RESULTS = Path("results")


def new_run_dir(out: str | None) -> RunDir:
    """`out`, or results/<timestamp>-<machine-id>, which results/latest then points at."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out) if out else RESULTS / f"{stamp}-{machine.machine_id()}"
    if (path / "results.jsonl").exists():
        raise RunDirError(f"{path} already holds a run; use --resume {path} to complete it")
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def point_latest_at(run: RunDir) -> None:
    """results/latest: the run most recently completed under results/ (nox's report reads it);
    a run elsewhere (--out) leaves it alone."""
    if run.path.resolve().parent != RESULTS.resolve():
        return
    latest = RESULTS / "latest"
    if latest.is_symlink():
        latest.unlink()
    elif latest.exists():
        return  # something of the user's: leave it alone
    RESULTS.mkdir(exist_ok=True)
    latest.symlink_to(run.path.resolve().name)


def method(config: SweepConfig, baseline: str) -> dict:
    """How this run measures, recorded in meta.json: compare warns when two runs differ in it."""
    return {
        "rounds": config.rounds,
        "ci": config.ci,
        "max_rounds": config.max_rounds,
        "ci_min_rounds": CI_MIN_ROUNDS,
        "round_process": "fresh worker per round of each case",
        "order": "round by round over the whole grid; in a round, shape by shape, a shape's "
        f"implementations alternating in turns of {pool.TURN_S:g} s, each worker quiet "
        "while the others sample",
        "statistic": "median, each round weighing the same",
        "interval": f"{stats.CONFIDENCE:.0%} expanded percentile bootstrap over whole rounds "
        f"(exact up to {stats.EXACT_MAX_ROUNDS} rounds, else {stats.MONTE_CARLO_RESAMPLES} "
        "resamples)",
        "unstable": f"the median's interval spans more than {UNSTABLE_WIDTH:.0%} of it",
        "baseline": baseline,
        **probes.described(),
        "cache": "cold: caches evicted before every timed call (CPU rows)"
        if config.cold_cache
        else "warm: calls back to back",
    }


def new_run(config: SweepConfig, names: list[str], out: str | None) -> tuple[RunDir, dict]:
    """A new run directory and its meta.json: the settings, what is measured and what is not,
    the machine, the libraries, the method."""
    run = new_run_dir(out)
    project = Path(__file__).resolve().parents[2]
    meta = {
        "settings": config.settings(),
        "impls": names,
        "not_measured": not_measured(names),
        "machine": machine.describe_machine(),
        "versions": machine.package_versions(),
        "environment": machine.code_path_environment(),
        "blas": machine.blas_info(),  # as loaded here; each worker's is under "threading"
        "threads": config.threads,
        "git": machine.git_state(project),
        "method": method(config, resolve_baseline(config, names)),
        "command": shlex.join(["attnbench", *sys.argv[1:]]),  # as `python -m harness` too
        "started": datetime.now(timezone.utc).isoformat(),
        "ended": None,
    }
    return run, meta


def resume_run(run: RunDir, meta: dict) -> None:
    """Ready a run to go on: cut a last line a killed process left unfinished, and note when."""
    if run.drop_torn_tail():
        print(f"{run.jsonl}: dropped an unfinished last line (it will be measured again)")
    meta.setdefault("resumed", []).append(datetime.now(timezone.utc).isoformat())


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def measure_run(config: SweepConfig, run: RunDir, meta: dict) -> Path:
    """Sweep the cases of meta["impls"] not yet in the run, then write results.csv (also when
    interrupted: every finished case is kept)."""
    run.write_meta(meta)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"run directory: {run.path}", flush=True)
    for name, reason in meta.get("not_measured", {}).items():
        print(f"not measured: {name}: {reason}", flush=True)
    if meta.get("environment"):
        settings = ", ".join(f"{k}={v}" for k, v in meta["environment"].items())
        print(f"set in the environment (the figures hold for these): {settings}", flush=True)
    try:
        run_sweep(config, run, meta["impls"], meta)
        meta["ended"] = datetime.now(timezone.utc).isoformat()
    except KeyboardInterrupt:
        print(
            f"interrupted: every finished case is in {run.jsonl}; measure the rest with\n"
            f"    attnbench run --resume {shlex.quote(str(run.path))}",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        run.write_meta(meta)
        frame = run.write_csv()
        print(f"{len(frame)} cases in {run.csv}", flush=True)
    point_latest_at(run)  # a completed run only
    return run.path
