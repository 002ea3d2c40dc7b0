"""Stored runs -> reports: aggregate (leaderboards, curves, grids) -> bootstrap (significance) -> plots
(matplotlib SVG) -> build (jinja2 HTML); exports writes the same aggregates as JSON, CSV and Markdown."""
