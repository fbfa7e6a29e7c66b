"""Rendering for every stage's report: markdown + self-contained HTML, plots, image grids.

Below every stage (it knows nothing of them), so each stage can write its own report.
"""
