"""nox sessions: `tests` (the default test suite, CUDA simulator and PTX included) and `lint`."""

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """pytest over every implementation; numba_cuda in the simulator when there is no GPU."""
    session.install("-e", ".[dev,cuda]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
