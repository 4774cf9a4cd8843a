"""Worker processes: each implementation is measured in its own process, one case at a time.

Isolation keeps numba's, OpenBLAS's and torch's thread pools from slowing each other (up to 4x
on this kind of machine), and lets a crash, a hang or a leak take down only the worker.

Workers are forked from a server process (multiprocessing's forkserver) that has imported NumPy,
numba and the harness but has run nothing: a new worker starts in a few hundredths of a second
instead of the half second a fresh interpreter takes to import them, which matters when every
round of every case gets a fresh worker. Each worker still builds its own thread pools, loads
its own compiled kernels and allocates its own arrays. The server never touches a GPU, so CUDA
is first initialised in the worker that uses it.
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


PRELOAD = ["numpy", "numba", "harness.measure"]  # imported once, in the server


def serve(conn, threads: int, environ: dict[str, str]) -> None:
    """The worker's loop: set threads, then answer each request until told to stop.

    Requests: a case's first round (`measure_case`), a later round (`measure_round`), or the
    reference workloads (`probe`: matrix products and streaming reads).
    """
    from harness.measure import (
        gemm_rates,
        measure_case,
        measure_round,
        read_rates,
        set_threads,
        settle,
        stream_rates,
        threading_report,
    )

    # The main process's environment as it is now, not as it was when the server started
    # (ATTNBENCH_IMPLS_PATH, for one, is read when the registry is first used, here).
    os.environ.clear()
    os.environ.update(environ)
    # Ctrl-C reaches the whole process group: the main process decides, workers just end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker never starts processes; said so, numba guards its thread-pool start with no
    # process lock, which a killed worker would leave behind as a leaked semaphore.
    multiprocessing.set_start_method("spawn", force=True)
    os.environ.update(thread_environment(threads))  # for pools created from here on (torch's)
    set_threads(threads)  # and the ones that exist already, at run time
    conn.send({"pid": os.getpid()})
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the main process is gone: nothing left to measure for
            return
        if message is None:
            return
        if "probe_dtype" in message:
            repeats = message["repeats"]
            reply = {
                "gemm_rates": gemm_rates(message["probe_dtype"], message["size"], repeats),
                "stream_gbps": stream_rates(message["stream_bytes"], repeats),
            }
            if message["case_bytes"]:
                settle()  # the products' BLAS threads spin on: they would share the reads' cores
                reply["bandwidth_gbps"] = read_rates(
                    message["case_bytes"], repeats, message["cold_cache"]
                )
            settle()  # this worker lives on: quiet before the next one's samples
        else:
            case, plan = Case(**message["case"]), SamplingPlan(**message["plan"])
            if message["inner"] is None:
                reply = measure_case(case, plan, message["budget_s"], message["seed"])
                reply["threading"] = threading_report()
            else:
                reply = measure_round(case, plan, message["seed"], message["inner"])
        conn.send(reply)  # a case's worker is killed after its round: no pool spins on


def thread_environment(threads: int) -> dict[str, str]:
    """The sizes of the thread pools that read them when they are created. (numba's is set at
    run time: its NUMBA_NUM_THREADS is the most it may ever use, read once by the server.)"""
    value = str(threads)
    return {"OMP_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class Worker:
    def __init__(self, threads: int):
        context = _context()
        self.conn, child_conn = context.Pipe()
        saved = {k: os.environ.get(k) for k in thread_environment(threads)}
        os.environ.update(thread_environment(threads))  # the server's, when this starts it
        try:
            self.process = context.Process(
                target=serve, args=(child_conn, threads, dict(os.environ)), daemon=True
            )
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
        inner: int | None = None,
    ) -> dict:
        """One round of `case`: its first (inner None: compile, check, samples, memory) or a
        later one, of samples of `inner` calls."""
        message = {"case": case.to_dict(), "plan": asdict(plan), "budget_s": budget_s}
        self._send({**message, "seed": seed, "inner": inner})
        return self._receive(timeout_s)

    def probe(
        self,
        dtype: str,
        size: int,
        repeats: int,
        stream_bytes: int,
        case_bytes: int = 0,
        cold_cache: bool = False,
    ) -> dict:
        """The reference workloads in this worker: `gemm_rates` (GFLOP/s of size^3 products)
        and `stream_gbps` (GB/s of one-thread streaming reads of stream_bytes), `repeats` of
        each; with case_bytes, `bandwidth_gbps` (reads of that many bytes by every thread, in
        the sweep's cache state)."""
        message = {"probe_dtype": dtype, "size": size, "repeats": repeats}
        message.update(stream_bytes=stream_bytes, case_bytes=case_bytes, cold_cache=cold_cache)
        self._send(message)
        return self._receive(STARTUP_TIMEOUT_S)

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
