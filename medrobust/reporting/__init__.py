"""Reporting: results.json → results.csv, report.md, report.html and plots. Never runs attacks.

>>> from medrobust.reporting import write_reports
>>> write_reports(results, "runs/audit")   # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.reporting.writers import render_html, render_markdown, write_reports

__all__ = ["render_html", "render_markdown", "write_reports"]
