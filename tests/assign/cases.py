"""Loading of the maIoU fixtures (tests/fixtures/reference/maiou)."""

import functools

import numpy as np

from tests.testing import reference_path

CASES = tuple(range(6))
FIXTURE_FILES = tuple(f"case_{i:02d}.npz" for i in CASES) + (
    "README.md", "cpu_timings.json", "manifest.json")


@functools.lru_cache(maxsize=None)
def load_case(index):
    with np.load(reference_path("maiou", f"case_{index:02d}.npz")) as data:
        return {key: data[key] for key in data.files}


def levels(case, prefix=""):
    return [int(n) for n in case[f"{prefix}num_level_bboxes"]]
