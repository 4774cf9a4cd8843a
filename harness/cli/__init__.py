"""The `attnbench` command: what the user typed, parsed and checked (settings, options, presets),
the library called, and its errors turned into one-line messages (harness/cli/main.py)."""
