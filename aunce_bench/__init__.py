"""aunce-bench: a benchmark harness and leaderboard for facial action unit (AU) detection.

`load_results(db)` and `leaderboard(db, ...)` (see `aunce_bench.api`) return pandas DataFrames; they are
imported on first use, so that `import aunce_bench` stays light.
"""

__version__ = "0.1.0"
__all__ = ["leaderboard", "load_results"]


def __getattr__(name: str):
    if name in __all__:
        from aunce_bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'aunce_bench' has no attribute {name!r}")
