# SPDX-License-Identifier: Apache-2.0
"""Progress bars on stderr (tqdm) for the long loops of the command line.

The functions that loop take ``progress=False`` by default (a library call
prints nothing it was not asked for); the CLI passes ``progress=True``
unless ``--quiet``. Bars go to stderr, so stdout stays the command's
result (tables, JSON, "wrote ..." lines). TensorFlow is not imported here.
"""

import contextlib
import sys
import threading


def bar(iterable=None, total=None, desc=None, unit="it", enabled=True):
    """A ``tqdm`` bar on stderr (a silent pass-through when not
    ``enabled``)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit,
                file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def split_bars(enabled=True, unit="img"):
    """A ``progress(split, done, total)`` callback (``data.make_shapes``)
    drawing one bar per split."""
    bars = {}

    def progress(split, done, total):
        if not enabled:
            return
        if split not in bars:
            bars[split] = bar(total=total, desc=split, unit=unit)
        current = bars[split]
        current.update(done - current.n)
        if done >= total:
            current.close()

    return progress


@contextlib.contextmanager
def spinner(desc, enabled=True):
    """An indeterminate bar while the block runs: ``desc`` and the elapsed
    time, refreshed twice a second. ``phase(text)`` on the yielded object
    names the current step (``convert``: reading, building, writing).
    """
    if not enabled:
        yield _NoPhase()
        return
    from tqdm import tqdm

    line = tqdm(total=None, desc=desc, file=sys.stderr,
                bar_format="{desc} [{elapsed}]", dynamic_ncols=True)
    stop = threading.Event()

    def tick():
        while not stop.wait(0.5):
            line.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield _Phase(line, desc)
    finally:
        stop.set()
        thread.join()
        line.close()


class _Phase:
    def __init__(self, line, desc):
        self._line, self._desc = line, desc

    def phase(self, text):
        self._line.set_description(f"{self._desc}: {text}")


class _NoPhase:
    def phase(self, text):
        pass
