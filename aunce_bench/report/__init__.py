"""Turning stored runs into tables: exports now; leaderboards, plots and HTML reports build on them."""
