"""Worker processes: each implementation is measured in its own process, one case at a time.

Isolation keeps numba's, OpenBLAS's and torch's thread pools from slowing each other (up to 4x
on this kind of machine), and lets a crash, a hang or a leak take down only the worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import asdict

from harness.cases import Case
from harness.timing import SamplingPlan

STARTUP_TIMEOUT_S = 120.0


class WorkerLost(Exception):
    """The worker died or stopped answering; the message is the reason for the case's row."""


ROUND_DONE = {"round_done": True}  # the answer to a round of samples that was not the last


def serve(conn, threads: int) -> None:
    """The worker's loop: set threads, then measure each case sent until told to stop.

    A case measured in rounds stays prepared between them; `next_round` continues it.
    """
    from harness.measure import gemm_rates, measure_case, set_threads, settle, threading_report

    # Ctrl-C reaches the whole process group: the main process decides, workers just end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)
    conn.send({"pid": os.getpid()})
    measuring = None  # the paused measurement of the current case
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the main process is gone: nothing left to measure for
            return
        if message is None:
            return
        if "gemm_dtype" in message:
            rates = gemm_rates(message["gemm_dtype"], message["size"], message["repeats"])
            settle()  # OpenBLAS's spinning pool would slow the next worker's samples
            conn.send({"rates": rates})
            continue
        if "case" in message:
            measuring = measure_case(
                Case(**message["case"]),
                SamplingPlan(**message["plan"]),
                message["budget_s"],
                message["seed"],
                message["rounds"],
            )
        try:
            next(measuring)
            settle()  # quiet before the next worker's samples start
        except StopIteration as finished:
            settle()
            measuring = None
            row = finished.value
            row["threading"] = threading_report()
            conn.send(row)
        else:
            conn.send(ROUND_DONE)


def thread_environment(threads: int) -> dict[str, str]:
    """Set before a worker starts, so that every pool is created at the chosen size."""
    value = str(threads)
    return {
        "NUMBA_NUM_THREADS": value,
        "OMP_NUM_THREADS": value,
        "OPENBLAS_NUM_THREADS": value,
        "MKL_NUM_THREADS": value,
    }


class Worker:
    def __init__(self, threads: int):
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        saved = {k: os.environ.get(k) for k in thread_environment(threads)}
        os.environ.update(thread_environment(threads))
        try:
            self.process = context.Process(target=serve, args=(child_conn, threads), daemon=True)
            self.process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        child_conn.close()
        self.pid = self._receive(STARTUP_TIMEOUT_S)["pid"]

    def _receive(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(0.05):
            if not self.process.is_alive():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise WorkerLost(f"timeout: no answer within {timeout_s:g} s; worker killed")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise WorkerLost(self._death()) from None

    def _death(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker crashed: killed by {name}"
        return f"worker exited with status {code}"

    def _send(self, message) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):  # it died while idle
            self.process.join(5)
            raise WorkerLost(self._death()) from None

    def measure(
        self,
        case: Case,
        plan: SamplingPlan,
        budget_s: float,
        seed: int,
        timeout_s: float,
        rounds: int = 1,
    ) -> dict:
        """The case's row, or ROUND_DONE when `rounds` > 1: then call next_round."""
        message = {"case": case.to_dict(), "plan": asdict(plan), "budget_s": budget_s}
        self._send({**message, "seed": seed, "rounds": rounds})
        return self._receive(timeout_s)

    def next_round(self, timeout_s: float) -> dict:
        """The next round of samples of the case being measured: ROUND_DONE, or the row."""
        self._send({"next_round": True})
        return self._receive(timeout_s)

    def gemm_rates(self, dtype: str, size: int = 2048, repeats: int = 5) -> list[float]:
        """GFLOP/s of `repeats` size^3 matrix products in this worker, one each."""
        self._send({"gemm_dtype": dtype, "size": size, "repeats": repeats})
        return self._receive(STARTUP_TIMEOUT_S)["rates"]

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # already gone
            self.conn.send(None)
        self.process.join(10)
        self.kill()
        self.conn.close()
