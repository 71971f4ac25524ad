"""Shared pieces of the scripts/benchmark_*.py scripts: timing, machine, tables."""

import os
import pathlib
import platform
import statistics
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "BENCHMARKS.md"


def measure(fn, warmup, runs):
    """Median / min wall ms of ``fn()`` and its CPU-time-per-wall ratio."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median_ms": 1e3 * statistics.median(wall),
            "min_ms": 1e3 * min(wall),
            "cpu_per_wall": statistics.median(c / w for c, w in zip(cpu, wall))}


def describe_machine():
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f
                       if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} logical CPUs"
            + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU")
            + f"; TensorFlow {tf.__version__}")


def timestamp():
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def write_section(mark, text, path=BENCHMARKS_MD):
    """Replace (or append) the block between ``<!-- mark:start/end -->``."""
    path = pathlib.Path(path)
    start, end = f"<!-- {mark}:start -->", f"<!-- {mark}:end -->"
    block = f"{start}\n{text}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in current and end in current:
        head, rest = current.split(start, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current)
