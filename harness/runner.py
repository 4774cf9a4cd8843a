"""`attnbench run`: settings, run directory, meta.json, the sweep, the final table."""

from __future__ import annotations

import dataclasses
import shlex
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness import machine
from harness.config import SweepConfig, apply
from harness.options import UsageError, resolve_impls
from harness.results import RunDir, RunDirError
from harness.sweep import method, resolve_baseline, run_sweep


def implementation_names(config: SweepConfig) -> list[str]:
    """The chosen implementations; by default every one available here."""
    return [impl.name for impl in resolve_impls(config.impl or None, only_available=True)]


def not_measured(names: list[str]) -> dict[str, str]:
    """Every registered implementation the run leaves out, with why (and how to install it)."""
    left_out = {}
    for impl in resolve_impls(None, only_available=False):
        if impl.name not in names:
            left_out[impl.name] = impl.unavailable_reason() or "not asked for (--impl)"
    return left_out


RESULTS = Path("results")


def new_run_dir(out: str | None) -> RunDir:
    """--out, or results/<timestamp>-<machine-id>, which results/latest then points at."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out) if out else RESULTS / f"{stamp}-{machine.machine_id()}"
    if (path / "results.jsonl").exists():
        raise UsageError(f"--out: {path} already holds a run; use --resume {path} to complete it")
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


def resume_config(run: RunDir, given: dict, config_file_values: dict) -> tuple[SweepConfig, dict]:
    """The stored settings; refuse settings given now that differ from them."""
    try:
        meta = run.meta()
    except RunDirError as exc:
        raise UsageError(f"--resume: {exc}") from None
    if "migrated_from" in meta:
        raise UsageError(
            f"--resume: {run.path} was measured by an older attnbench (schema "
            f"{meta['migrated_from']}, another method); start a new run with its settings: "
            f"{meta.get('command', 'attnbench run ...')}"
        )
    for key, kind in (("settings", dict), ("impls", list)):
        if not isinstance(meta.get(key), kind):
            raise UsageError(f"--resume: {run.meta_path}: no {key!r} recorded; cannot resume")
    stored = apply(SweepConfig(), meta["settings"], f"{run.meta_path} settings")
    asked = apply(stored, {**config_file_values, **given}, "command line")
    differ = [
        f"{f.name} (run: {getattr(stored, f.name)!r}, given: {getattr(asked, f.name)!r})"
        for f in dataclasses.fields(SweepConfig)
        if getattr(stored, f.name) != getattr(asked, f.name)
    ]
    if differ:
        raise UsageError(
            f"--resume: settings differ from the run being resumed: {'; '.join(differ)}. "
            "Resume without them, or start a new run."
        )
    return stored, meta


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_command(config: SweepConfig, resume: str | None, given: dict, config_values: dict) -> Path:
    if resume:
        run = RunDir(Path(resume))
        config, meta = resume_config(run, given, config_values)
        if run.drop_torn_tail():
            print(f"{run.jsonl}: dropped an unfinished last line (it will be measured again)")
        names = meta["impls"]
        meta.setdefault("resumed", []).append(datetime.now(timezone.utc).isoformat())
    else:
        names = implementation_names(config)
        run = new_run_dir(given.get("out"))
        project = Path(__file__).resolve().parent.parent
        meta = {
            "settings": config.settings(),
            "impls": names,
            "not_measured": not_measured(names),
            "machine": machine.describe_machine(),
            "versions": machine.package_versions(),
            "blas": machine.blas_info(),  # as loaded here; each worker's is under "threading"
            "threads": config.threads,
            "git": machine.git_state(project),
            "method": method(config, resolve_baseline(config, names)),
            "command": shlex.join(sys.argv),
            "started": datetime.now(timezone.utc).isoformat(),
            "ended": None,
        }
    run.write_meta(meta)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"run directory: {run.path}", flush=True)
    for name, reason in meta.get("not_measured", {}).items():
        print(f"not measured: {name}: {reason}", flush=True)
    try:
        run_sweep(config, run, names, meta)
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
