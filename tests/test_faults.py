"""The sweep survives crashing, hanging, raising and lying implementations, and resumes.

The planted implementations live in tests/faulty_impls/ and are registered only here, through
ATTNBENCH_IMPLS_PATH.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMALL_PEAK_SIZE, SMALL_STREAM_BYTES

import impls
from harness.cli.main import main

FAULTY = Path(__file__).parent / "faulty_impls"
# `attnbench ...` in a process of its own (the signals are what is tested), with the small
# reference workloads every sweep in the tests uses (conftest.small_reference_workloads).
CLI = [
    sys.executable,
    "-c",
    "import sys; from harness.sweep import probes; from harness.cli.main import main; "
    f"probes.PEAK_SIZE, probes.STREAM_BYTES = {SMALL_PEAK_SIZE}, {SMALL_STREAM_BYTES}; "
    "sys.exit(main())",
]


@pytest.fixture
def planted(monkeypatch):
    monkeypatch.setenv(impls.PATH_ENV, str(FAULTY))
    impls.registry(refresh=True)
    yield
    monkeypatch.delenv(impls.PATH_ENV)
    impls.registry(refresh=True)


def quick_run(out: Path, impl: str, n: str, *extra: str, d: str = "4") -> pd.DataFrame:
    """`attnbench run` of a tiny grid (1 thread, 10 ms per case) into `out`; its table."""
    argv = ["run", "--impl", impl, "--n", n, "--d", d, "--target", "0.01", "--threads", "1"]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return pd.read_csv(out / "results.csv")


def sweep(tmp_path, *impl_names, n="8,16,32", timeout="4"):
    config = tmp_path / "fast.toml"
    config.write_text(f"case_timeout_s = {timeout}\n")
    table = quick_run(tmp_path / "run", ",".join(impl_names), n, "--config", str(config))
    return table.set_index(["impl", "n"])


def test_crashes_hangs_and_exceptions_are_recorded_and_the_sweep_goes_on(planted, tmp_path):
    table = sweep(tmp_path, "fault_segfault", "fault_hang", "fault_raises", "numpy")
    assert table.loc[("fault_segfault", 8), "status"] == "ok"
    assert table.loc[("fault_segfault", 16), "status"] == "failed"
    assert "SIGSEGV" in table.loc[("fault_segfault", 16), "note"]
    assert table.loc[("fault_segfault", 32), "status"] == "skipped"
    assert "after an earlier failure" in table.loc[("fault_segfault", 32), "note"]
    assert table.loc[("fault_hang", 16), "status"] == "failed"
    assert "timeout" in table.loc[("fault_hang", 16), "note"]
    assert table.loc[("fault_hang", 32), "status"] == "skipped"
    assert table.loc[("fault_raises", 16), "note"] == "RuntimeError: planted failure in run"
    assert table.loc[("fault_raises", 32), "status"] == "failed"  # no crash: still tried
    # A new worker replaced the dead ones: the implementation after them measured everything.
    assert (table.loc["numpy", "status"] == "ok").all()


def test_a_crash_skips_only_larger_cases_and_resume_remembers_it(planted, tmp_path):
    out = tmp_path / "run"
    table = quick_run(  # one round: a record per case, so that the last two can be lost
        out, "fault_segfault", "8,16,32", "--dtype", "float32,float64", "--rounds", "1", d="4,8"
    )
    table = table.set_index(["dtype", "d", "n"])
    for dtype in ("float32", "float64"):
        assert table.loc[(dtype, 4, 8), "status"] == "ok"
        assert table.loc[(dtype, 4, 16), "status"] == "failed"  # each dtype crashes on its own
        assert table.loc[(dtype, 8, 8), "status"] == "ok"  # smaller n, larger d: still tried
        assert table.loc[(dtype, 8, 16), "status"] == "skipped"
        assert "at n=16, d=4" in table.loc[(dtype, 8, 16), "note"]
    # Resume after losing the last rows: the crash is remembered, nothing crashes again.
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    assert main(["run", "--resume", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows[-2:]] == ["skipped", "skipped"]
    assert sum(r["status"] == "failed" for r in rows) == 2


def test_a_disagreeing_case_over_budget_stays_disagreeing(planted, tmp_path):
    out = tmp_path / "run"
    row = quick_run(out, "fault_garbage", "64", "--budget", "1e-9").iloc[0]
    assert row.status == "disagrees"
    assert "max_rel_err" in row.note and "not timed: one call took" in row.note


def test_a_module_removed_before_resume_is_skipped_with_its_reason(planted, tmp_path, monkeypatch):
    out = tmp_path / "run"
    quick_run(out, "numpy,fault_slow", "8")
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n")  # numpy's first round alone survives
    monkeypatch.setenv(impls.PATH_ENV, "")
    impls.registry(refresh=True)
    assert main(["run", "--resume", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (gone,) = [row for row in rows if row["impl"] == "fault_slow"]
    assert gone["status"] == "skipped" and "no longer registered" in gone["note"]


def test_wrong_numbers_nan_and_wrong_shape_are_recorded_as_disagreeing(planted, tmp_path):
    table = sweep(tmp_path, "fault_garbage", "fault_nan", "fault_shape", n="8,16")
    assert (table.status == "disagrees").all()
    assert (
        table.loc[("fault_garbage", 8), "max_rel_err"]
        > table.loc[("fault_garbage", 8), "tolerance"]
    )
    assert "non-finite" in table.loc[("fault_nan", 8), "note"]
    assert "shape" in table.loc[("fault_shape", 8), "note"]


def test_a_module_that_fails_to_import_does_not_stop_list_or_run(planted, tmp_path, capsys):
    assert main(["list"]) == 0
    assert "No module named 'attnbench_no_such_dependency'" in capsys.readouterr().out
    table = sweep(tmp_path, "fault_import", "numpy", n="8")
    assert table.loc[("fault_import", 8), "status"] == "skipped"
    assert "import failed" in table.loc[("fault_import", 8), "note"]
    assert table.loc[("numpy", 8), "status"] == "ok"


def start_sweep(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, impls.PATH_ENV: str(FAULTY)}
    return subprocess.Popen(
        [
            *CLI,
            "run",
            "--impl",
            "fault_slow,numpy",
            "--n",
            "8,16,32",
            "--d",
            "4",
            "--target",
            "0.01",
            "--threads",
            "1",
            "--out",
            str(out),
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(path: Path, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines")


def test_sigkill_mid_sweep_loses_nothing_and_resume_completes_it(tmp_path):
    out = tmp_path / "run"
    process = start_sweep(out)
    wait_for_lines(out / "results.jsonl", 2)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    before = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert 2 <= len(before) < 6 * 3  # a record per case and round
    resumed = subprocess.run(
        [*CLI, "run", "--resume", str(out)],
        env={**os.environ, impls.PATH_ENV: str(FAULTY)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    after = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert after[: len(before)] == before  # nothing measured was lost or re-measured
    assert len({(r["impl"], r["n"]) for r in after}) == 6  # complete
    table = pd.read_csv(out / "results.csv")  # each case once: its last record
    assert len(table) == 6 and set(table.status) == {"ok"}
    assert json.loads((out / "meta.json").read_text())["resumed"]


def test_sigterm_stops_cleanly_with_the_table_written(tmp_path):
    out = tmp_path / "run"
    process = start_sweep(out)
    wait_for_lines(out / "results.jsonl", 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 130
    err = process.stderr.read()
    assert "Traceback" not in err
    assert f"attnbench run --resume {out}" in err  # how to go on, to paste
    rows = len((out / "results.jsonl").read_text().splitlines())
    assert len(pd.read_csv(out / "results.csv")) == rows


def test_resume_refuses_different_settings(tmp_path, capsys):
    out = tmp_path / "run"
    quick_run(out, "numpy", "8")
    assert main(["run", "--resume", str(out), "--d", "8"]) == 2
    err = capsys.readouterr().err
    assert "settings differ" in err and "d (run: (4,), given: (8,))" in err
    assert main(["run", "--resume", str(out)]) == 0  # nothing missing: nothing to do


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "0"], "--n: expected a positive integer, got '0'"),
        (["--n", "-64"], "--n: expected a positive integer, got '-64'"),
        (["--d", "0"], "--d: expected a positive integer, got '0'"),
        (["--n", "64,,128"], "--n: expected a comma-separated list, got '64,,128'"),
        (["--n", "64;128"], "--n: expected a positive integer, got '64;128'"),
        (["--dtype", "float16"], "--dtype: expected float32 or float64, got 'float16'"),
        (["--impl", "nope"], "--impl: unknown implementation 'nope'"),
        (["--budget", "0"], "--budget: expected a positive number of seconds, got '0'"),
        (["--budget", "-1"], "--budget: expected a positive number of seconds, got '-1'"),
        (["--sweep-budget", "x"], "--sweep-budget: expected a positive number of seconds"),
        (["--threads", "999"], "--threads: expected at most"),
        (["--threads", "0"], "--threads: expected a positive integer, got '0'"),
        (["--resume", "/nonexistent/run"], "--resume: /nonexistent/run: not a run directory"),
        (["--seed", "-1"], "--seed: expected a non-negative integer, got '-1'"),
        (["--rounds", "0"], "--rounds: expected a positive integer, got '0'"),
        (["--causal", "sometimes"], "--causal: expected true, false or both, got 'sometimes'"),
        (["--config", "/"], "--config: cannot read /"),
    ],
)
def test_bad_options_are_refused_naming_the_option(argv, message, capsys):
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "toml, message",
    [
        ("colour = 'red'\n", "unknown key 'colour'; valid keys:"),
        ("n = [64, 0]\n", "--n: expected a positive integer, got '0'"),
        ("causal = 'yes'\n", "--causal: expected true, false or both, got 'yes'"),
        ("causal = [1, 0]\n", "--causal: expected true, false or both, got [1, 0]"),
        ("threads = 1.5\n", "--threads: expected a positive integer, got 1.5"),
        ("min_samples = 2\n", "min_samples: expected at least 5, got 2"),
        ("case_timeout_s = -1\n", "case_timeout_s: expected a positive number of seconds"),
        ("n = 64 64\n", "is not valid TOML"),
    ],
)
def test_bad_config_files_are_refused_naming_the_key(tmp_path, toml, message, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_pyproject_table_gives_the_defaults(tmp_path, monkeypatch, capsys):
    (tmp_path / "pyproject.toml").write_text("[tool.attnbench]\nbudget = -3\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--impl", "numpy"]) == 2
    err = capsys.readouterr().err
    assert "[tool.attnbench]" in err and "--budget: expected a positive number" in err


def make_run(tmp_path) -> Path:
    out = tmp_path / "run"
    quick_run(out, "numpy", "8,16")
    return out


@pytest.mark.parametrize("command", ["resume", "plot"])
def test_corrupt_and_newer_run_directories_are_refused(tmp_path, capsys, command):
    from harness.results.rundir import RunDir, RunDirError, load_run

    out = make_run(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(RunDirError, match="schema version 99 is newer"):
        load_run(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(RunDirError, match="corrupt JSON"):
        load_run(out)
    (out / "meta.json").write_text(json.dumps({**meta, "schema_version": 0}))
    with pytest.raises(RunDirError, match="schema version 0 is not supported"):
        load_run(out)
    (out / "meta.json").write_text(json.dumps(meta))
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join([lines[0], "garbage{", lines[1]]) + "\n")
    with pytest.raises(RunDirError, match=r"results\.jsonl:2: corrupt line"):
        RunDir(out).rows()
    argv = ["run", "--resume", str(out)] if command == "resume" else ["plot", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "corrupt line" in err and "Traceback" not in err
    (out / "meta.json").write_text(json.dumps({**meta, "schema_version": 99}))
    assert main(argv) == 2
    assert "newer than this attnbench reads" in capsys.readouterr().err


def test_a_bad_last_line_that_was_completely_written_is_corruption(tmp_path):
    from harness.results.rundir import RunDir, RunDirError

    out = make_run(tmp_path)
    with open(out / "results.jsonl", "a") as f:
        f.write("not json\n")
    with pytest.raises(RunDirError, match="corrupt line"):
        RunDir(out).rows()


def test_resume_refuses_a_meta_without_settings(tmp_path, capsys):
    out = make_run(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    del meta["settings"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert main(["run", "--resume", str(out)]) == 2
    assert "no 'settings' recorded" in capsys.readouterr().err


def test_a_torn_last_line_is_dropped_and_resume_remeasures_it(tmp_path):
    from harness.results.rundir import RunDir

    out = make_run(tmp_path)
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:20])
    assert len(RunDir(out).rows()) == 1  # n = 8's first round; n = 16's was torn
    assert main(["run", "--resume", str(out)]) == 0
    assert list(RunDir(out).table()["n"]) == [8, 16]


def test_a_long_sweep_keeps_the_main_process_memory_flat(tmp_path, monkeypatch):
    """500 cases: the main process holds no per-case state beyond a record and its samples.
    (The workers are scripted: it is the main process that is measured.)"""
    import psutil
    from test_sweep import START, ScriptedWorker

    from harness.cli.config import SweepConfig
    from harness.results.rundir import RunDir
    from harness.sweep import pool
    from harness.sweep.progress import Progress
    from harness.sweep.rounds import run_sweep

    monkeypatch.setattr(pool, "Worker", ScriptedWorker)
    monkeypatch.setattr("harness.sweep.rounds.start_probe", lambda config, repeats: START)
    monkeypatch.setattr(ScriptedWorker, "log", [])
    monkeypatch.setattr(ScriptedWorker, "rounds_done", {})

    rss_bytes = []

    class RecordingProgress(Progress):
        def finish(self, case, row, steps=1):
            rss_bytes.append(psutil.Process().memory_info().rss)

    config = SweepConfig(
        impl=("numpy",),
        n=tuple(range(2, 102)),
        d=(1, 2, 3, 4, 5),
        threads=1,
        target_s=0.001,
        min_samples=5,
        min_sample_s=0.0002,
        sweep_budget_s=600,
    )
    run = RunDir(tmp_path)
    with open(os.devnull, "w") as quiet:
        written = run_sweep(
            config, run, ["numpy"], {}, lambda total: RecordingProgress(total, quiet)
        )
    assert len(written) == 500 and {row["status"] for row in written} == {"ok"}
    growth = rss_bytes[-1] - rss_bytes[50]
    print(
        f"main process RSS: {rss_bytes[50] / 2**20:.1f} MiB after 50 cases, "
        f"{rss_bytes[-1] / 2**20:.1f} MiB after 500 (growth {growth / 2**20:.2f} MiB)"
    )
    assert growth < 8 * 2**20


def test_gpu_hooks_give_event_times_transfers_and_device_memory(planted, tmp_path, monkeypatch):
    """The CUDA path of the sweep, run by a CPU stand-in that exposes the same hooks."""
    out = tmp_path / "run"
    row = quick_run(out, "planted_device", "16").iloc[0]
    assert row.status == "ok" and row.timer == "cuda events"
    assert row.median_s == pytest.approx(1e-3) and row.iqr_s == 0
    assert row.transfer_s == pytest.approx(5e-4)  # host-to-device plus device-to-host
    assert row.peak_mem_bytes == 4 * 16 * 4 * 4  # q, k, v and the output, float32


def test_a_simulated_gpu_is_never_timed(planted, tmp_path, monkeypatch):
    """The implementation's is_simulated hook says so (numba_cuda's, under numba-cuda's
    simulator): its correctness is checked elsewhere, its times are not taken."""
    monkeypatch.setenv("ATTNBENCH_PLANTED_SIMULATED", "1")
    out = tmp_path / "run"
    row = quick_run(out, "planted_device", "16").iloc[0]
    assert row.status == "skipped" and "simulated device" in row.note


def test_a_resumed_run_measures_again_the_cases_interrupted_between_rounds(tmp_path):
    """Cut to its first round's records, a run resumes those cases in full: every case ends
    with all its rounds, and the earlier records stay in results.jsonl."""
    from harness.results.rundir import RunDir

    out = tmp_path / "run"
    quick_run(out, "numpy", "8,16")
    lines = (out / "results.jsonl").read_text().splitlines()
    first_round = [line for line in lines if json.loads(line)["rounds"] == 1]
    (out / "results.jsonl").write_text("\n".join(first_round) + "\n")
    assert main(["run", "--resume", str(out)]) == 0
    records = RunDir(out).rows()
    assert [json.loads(line) for line in first_round] == records[: len(first_round)]
    assert list(RunDir(out).table()["rounds"]) == [3, 3]
