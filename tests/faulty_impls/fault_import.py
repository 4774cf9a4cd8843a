"""Fails to import: a missing dependency."""

import attnbench_no_such_dependency  # noqa: F401
