"""Fault injection on a tiny training run: many kills and write failures,
each resumed, every case checked bit-identical to the uninterrupted run.

Each case is one run folder of the tiny ``orienmask-tf train`` of
``tests/training/faults.py`` (3 epochs x 3 steps, 64 px shapes, a backup
after every step) hit by a chain of 1-3 faults drawn from the case's seed,
at increasing backup positions:

* ``kill@STAGE:P``: SIGKILL inside the backup write of position P
  (``training.backup.fault_point``) at STAGE ``begin``, ``variables``
  (half the file written), ``state``, ``marker``, ``rename`` (complete,
  older ones not yet deleted) or ``cleanup`` (while deleting them);
* ``enospc@STAGE:P`` / ``eacces@STAGE:P``: the OSError of a full disk / a
  read-only folder at that write (the run must end with exit code 2 and
  one line naming the kept backup);
* ``kill@t=F``: SIGKILL from outside at F x (the uninterrupted run's wall
  time) after the run printed its folder: any moment (start-up, tracing, a
  step, a checkpoint or history write, a backup);
* ``full-disk``: a real one (root only): ``backup/`` becomes a tmpfs with
  room for what it holds plus half a backup, so the next backup write
  fails with the kernel's ENOSPC; afterwards the files go back to disk.

After the chain, the same ``train`` command is rerun until it finishes;
the newest backup (every model and optimizer variable) must be
``np.array_equal`` to the uninterrupted run's. The table goes to
BENCHMARKS.md (``--write``) between ``<!-- fault_injection:start/end -->``.

    python scripts/fault_injection.py --cases 12 --jobs 2 --write
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402
from tests.training import faults  # noqa: E402

KILL_STAGES = ("begin", "variables", "state", "marker", "rename", "cleanup")
ERROR_STAGES = ("begin", "variables", "state", "marker")


def draw_chain(seed, full_disk=False):
    """1-3 faults at increasing positions (1..TOTAL) from ``seed``."""
    rng = random.Random(seed)
    count = rng.choice((1, 2, 2, 3))
    positions = sorted(rng.sample(range(1, faults.TOTAL + 1), count))
    chain = []
    for position in positions:
        kind = rng.choices(("kill", "error", "random", "full"),
                           (3, 2, 1, 1 if full_disk else 0))[0]
        if kind == "full":
            chain.append(("full", "disk", None))
        elif kind == "kill":
            chain.append(("kill", rng.choice(KILL_STAGES), position))
        elif kind == "error":
            chain.append((rng.choice(("enospc", "eacces")),
                          rng.choice(ERROR_STAGES), position))
        else:
            chain.append(("random", round(rng.uniform(0.05, 1.0), 2), None))
    return chain


def label(fault):
    action, where, position = fault
    if action == "random":
        return f"kill@t={where}"
    if action == "full":
        return "full-disk"
    return f"{action}@{where}:{position}"


def _move_all(source, target):
    os.makedirs(target, exist_ok=True)
    for entry in os.listdir(source):
        shutil.move(os.path.join(source, entry), os.path.join(target, entry))


def _size(folder):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(folder) for f in files)


def can_mount():
    probe = tempfile.mkdtemp()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                             probe], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", probe], check=True)
        return ok
    finally:
        os.rmdir(probe)


def run_on_full_disk(root, run, backup_bytes):
    """One ``train`` with ``run/backup`` on a tmpfs that has room for half
    a backup more than it holds; the files are back on disk after."""
    folder = os.path.join(run, "backup")
    os.makedirs(folder, exist_ok=True)
    stash = tempfile.mkdtemp()
    _move_all(folder, stash)
    size = _size(stash) + backup_bytes // 2 + (64 << 10)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                    folder], check=True)
    try:
        _move_all(stash, folder)
        process = faults.Run(root, run).wait()
        _move_all(folder, stash)
    finally:
        subprocess.run(["umount", folder], check=True)
    _move_all(stash, folder)
    os.rmdir(stash)
    return process


def run_case(index, seed, root, out, reference_seconds, backup_bytes):
    run = os.path.join(out, f"case{index:03d}")
    chain = draw_chain(seed, full_disk=backup_bytes is not None)
    outcomes = []
    for fault in chain:
        action, where, position = fault
        if action == "full":
            process = run_on_full_disk(root, run, backup_bytes)
        elif action == "random":
            process = faults.Run(root, run,
                                 kill_after=where * reference_seconds).wait()
        else:
            process = faults.Run(root, run,
                                 fault=f"{action}:{where}:{position}").wait()
        if process.code == 0:
            outcomes.append("finished")
        elif process.code == -9:
            outcomes.append("killed")
        elif process.code == 2 and process.err.strip().splitlines()[-1] \
                .startswith("orienmask-tf train: error: ") \
                and "cannot write the backup" in process.err:
            outcomes.append("full disk" if "No space left" in process.err
                            else "write refused")
        else:
            outcomes.append(f"exit {process.code}")
            print(process.err[-3000:], file=sys.stderr)
    attempts = 0
    while attempts < 3:
        attempts += 1
        last = faults.Run(root, run).wait()
        if last.code == 0:
            break
        print(last.err[-3000:], file=sys.stderr)
    try:
        same, detail = faults.identical(
            faults.final_variables(os.path.join(out, "reference")),
            faults.final_variables(run))
    except (AssertionError, TypeError) as error:
        same, detail = False, f"no final backup ({error})"
    return {"case": index, "seed": seed,
            "faults": " -> ".join(label(f) for f in chain),
            "outcomes": ", ".join(outcomes), "resumes": attempts,
            "identical": same, "detail": detail}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0,
                        help="case i uses seed + i")
    parser.add_argument("--jobs", type=int, default=2,
                        help="cases run at once")
    parser.add_argument("--output", help="work folder (default: a temporary "
                                         "one)")
    parser.add_argument("--write", action="store_true",
                        help="write the table to BENCHMARKS.md")
    args = parser.parse_args()
    out = args.output or tempfile.mkdtemp(prefix="fault_injection_")
    root = os.path.join(out, "data")
    faults.make_data(root)
    started = time.monotonic()
    reference = faults.Run(root, os.path.join(out, "reference")).wait()
    if reference.code != 0:
        sys.exit(f"the uninterrupted run failed:\n{reference.err[-3000:]}")
    # A finished reference (an earlier call with the same --output) only
    # loads; the random kill times scale with a full run's wall time.
    seconds = reference.seconds
    if "resuming from" in reference.out:
        seconds = float(open(os.path.join(out, "reference_seconds")).read())
    else:
        with open(os.path.join(out, "reference_seconds"), "w") as stream:
            stream.write(f"{seconds:.1f}")
    print(f"reference run: {seconds:.0f} s", flush=True)
    backup_bytes = None
    if can_mount():
        newest = sorted(os.listdir(os.path.join(out, "reference", "backup")))
        backup_bytes = _size(os.path.join(out, "reference", "backup",
                                          newest[-1]))

    results, lock = [], threading.Lock()
    queue = list(range(args.cases))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                index = queue.pop(0)
            row = run_case(index, args.seed + index, root, out, seconds,
                           backup_bytes)
            with lock:
                results.append(row)
                if args.write:  # the table so far, in case of a time-out
                    write_section("fault_injection", table(
                        sorted(results, key=lambda r: r["case"]), args,
                        started, backup_bytes, partial=True))
            print(f"case {row['case']} seed {row['seed']}: {row['faults']} "
                  f"[{row['outcomes']}] -> identical {row['identical']} "
                  f"({row['detail']})", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(args.jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.sort(key=lambda r: r["case"])
    text = table(results, args, started, backup_bytes)
    print(text)
    if args.write:
        write_section("fault_injection", text)
    same = sum(r["identical"] for r in results)
    sys.exit(0 if same == len(results) else 1)


def table(results, args, started, backup_bytes, partial=False):
    minutes = (time.monotonic() - started) / 60
    same = sum(r["identical"] for r in results)
    fired = sum(r["outcomes"].count("killed") + r["outcomes"].count("disk")
                + r["outcomes"].count("refused") for r in results)
    lines = [
        f"`python scripts/fault_injection.py --cases {args.cases} --seed "
        f"{args.seed} --jobs {args.jobs}`"
        + (f" ({len(results)} of {args.cases} cases so far)" if partial
           else "")
        + f" ({timestamp()}, "
        f"{describe_machine()}; {minutes:.1f} min). Tiny OrienMask, "
        f"{faults.EPOCHS} epochs x {faults.STEPS} steps, a backup every "
        "step; each case: a chain of faults, then the same `train` command "
        "until it finishes; identical = every model and optimizer variable "
        "of the final backup `np.array_equal` to the uninterrupted run's.",
        "",
        f"**{same} of {len(results)} cases identical** ({fired} faults "
        "fired: kills and write errors"
        + ("" if backup_bytes else "; no real full disk: mount not "
           "permitted") + ").",
        "",
        "| case | seed | faults (in order) | what each did | reruns to "
        "finish | identical |",
        "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['seed']} | {r['faults']} | "
                     f"{r['outcomes']} | {r['resumes']} | "
                     f"{'yes' if r['identical'] else 'NO: ' + r['detail']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
