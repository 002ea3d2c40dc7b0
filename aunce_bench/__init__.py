"""aunce-bench: a benchmark harness and leaderboard for facial action unit (AU) detection."""

__version__ = "0.1.0"
