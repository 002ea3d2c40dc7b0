"""Faults installed in every Ray worker of tests/test_ray_executor.py (its worker_process_setup_hook): no worker
may open a result store, and runs on the frequent-AU tiny protocol (AUs 6 and 12) raise on fold 2 and kill
their worker on fold 3."""

import os

from aunce_bench import launch
from aunce_bench.results import ResultStore

FREQUENT_AUS = [6, 12]
FOLD2_TEST_SUBJECTS = ["B005", "B006", "B007", "B008"]
FOLD3_TEST_SUBJECTS = ["B001", "B002", "B003", "B004"]


def install() -> None:
    real_run_frames = launch.run_frames

    def faulty_run_frames(config, subjects, aus, root, loading, progress):
        if list(aus) == FREQUENT_AUS and list(subjects) == FOLD2_TEST_SUBJECTS:
            raise RuntimeError("disk went away")
        if list(aus) == FREQUENT_AUS and list(subjects) == FOLD3_TEST_SUBJECTS:
            os._exit(1)  # as a segfault or the OOM killer would end the worker
        return real_run_frames(config, subjects, aus, root, loading, progress)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a Ray task opened a result store; only the driver may write it")

    launch.run_frames = faulty_run_frames
    ResultStore.__init__ = refuse
