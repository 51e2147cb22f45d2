"""The long-lived worker processes give freed memory back (`cluster.runtime.release_free_heap`), so a worker's
memory follows what is live instead of the largest mix of array sizes it has met."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A worker's pattern in small: a large array freed, then a smaller one freed. glibc raises its mmap threshold
# above the first, so the second comes from the heap and stays resident after it is freed, until a trim.
_PROBE = """
import numpy as np
import psutil
from pipeline.cluster.runtime import release_free_heap
def private():
    m = psutil.Process().memory_info()
    return (m.rss - m.shared) / 2**20
big = np.ones(24 * 2**20 // 8); del big
before = private()
mid = np.ones(12 * 2**20 // 8); del mid
kept = private() - before
applied = release_free_heap()
print(applied, kept, private() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_free_heap_gives_a_freed_array_back_to_the_kernel():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    applied, kept_before_trim, kept_after_trim = out[0] == "True", float(out[1]), float(out[2])
    assert applied
    assert kept_before_trim > 8, "glibc's dynamic mmap threshold keeps the freed 12 MiB array resident"
    assert kept_after_trim < 2
