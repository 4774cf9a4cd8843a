"""Figures of one or several run directories: who wins where, how each scales, how near the peak.

A module per kind of figure: its `*_figure` function builds a matplotlib Figure from data and
writes nothing (testable); harness/present/plots.py's `save_figure` writes one as PNG (to look at)
and SVG (for papers). Figures are made with matplotlib.figure.Figure, never pyplot: no global
state, no backend chosen, at import or after.

Only `ok` cases are drawn as measurements. Skipped, failed and disagreeing cases are drawn as
markers along the top of each panel in their implementation's colour, so none goes missing
silently and a disagreeing timing is never read as a valid one.
"""
