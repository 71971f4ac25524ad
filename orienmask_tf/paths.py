# SPDX-License-Identifier: Apache-2.0
"""Kinds of the paths a user gives: one-line errors that name the option
(``--annotations``, ``data.train_images``, ...), the path and what was
expected.

Used by the command line (every path option, before any work starts), the
config checks (``data.*`` paths that exist) and the readers
(``data.coco.load_coco``, ``eval.coco_eval.load_ground_truth``), so that a
folder given for a file, a file given for a folder and a missing path read
the same everywhere. Imports nothing of the package.
"""

import os


class PathError(ValueError):
    """A path of the wrong kind; the message names the option and path."""


def _blocking_file(path):
    """The nearest existing ancestor of ``path`` if it is not a folder
    (nothing can be created below it), else None."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent if parent and not os.path.isdir(parent) else None


def kind_error(path, kind, name, what):
    """The one-line problem of ``path`` for an option of ``kind``, or None.

    Args:
        path: the path as the user wrote it.
        kind: ``"file"`` / ``"folder"`` (must exist), ``"output_file"`` /
            ``"output_folder"`` (written: may be missing, must not be the
            other kind, and no ancestor may be a file) or ``"if_exists_file"``
            / ``"if_exists_folder"`` (only a path that exists is checked:
            config paths, which may name another machine's data), or
            ``"prefix"`` (the start of file names: not ending in a
            separator, below no file).
        name: the option or key (``--annotations``, ``data.val_images``).
        what: what was expected, e.g. ``"a COCO instances JSON file"``.
    """
    text = os.fspath(path)
    where = f"{name} {text}"
    base = kind.rpartition("_")[2]  # "file" or "folder"
    if text == "":
        return f"{name}: empty path (expected {what})"
    if kind == "prefix":
        # PREFIX-00000-of-00008.tfrecord: a prefix may share its name with
        # a folder (data/coco/train2017 beside the train2017 images) but
        # must name something inside its folder.
        if text.endswith((os.sep, "/")) or os.path.basename(text) in (
                ".", ".."):
            return (f"{where}: is a folder name, expected {what}")
        blocker = _blocking_file(text)
        if blocker is not None:
            return (f"{where}: cannot be created, {blocker} is a file "
                    f"(expected {what})")
        return None
    if os.path.exists(text):
        if base == "file" and os.path.isdir(text):
            return f"{where}: is a folder, expected {what}"
        if base == "folder" and not os.path.isdir(text):
            return f"{where}: is a file, expected {what}"
        return None
    if kind in ("file", "folder"):
        blocker = _blocking_file(text)
        if blocker is not None:
            return (f"{where}: no such {base} ({blocker} is a file; "
                    f"expected {what})")
        return f"{where}: no such {base} (expected {what})"
    if kind.startswith("output"):
        blocker = _blocking_file(text)
        if blocker is not None:
            return (f"{where}: cannot be created, {blocker} is a file "
                    f"(expected {what})")
    return None


def check_path(path, kind, name, what):
    """Raise ``PathError`` with ``kind_error``'s message, if any; returns
    ``path``."""
    problem = kind_error(path, kind, name, what)
    if problem is not None:
        raise PathError(problem)
    return path
