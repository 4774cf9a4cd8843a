"""attnbench's harness: cases, agreement checks, timing, sweeps, results, plots and the CLI."""
