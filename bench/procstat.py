"""CPU time and resident memory of a process, read from /proc (Linux)."""

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of the process, in seconds
    (resolution: one clock tick, usually 10 ms)."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of the process."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def pin(pid: int, cpu: int) -> bool:
    """Keep a process on one CPU when the machine has more than one; says if it did."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


def descendants(pid: int) -> list[int]:
    """The process's children, their children and so on (e.g. uvicorn's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                parent = int(file.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of the process and all its descendants alive now."""
    total = 0.0
    for member in (pid, *descendants(pid)):
        try:
            total += cpu_seconds(member)
        except (OSError, IndexError, ValueError):
            pass  # exited meanwhile
    return total


def unpin(pid: int) -> None:
    """Let a process run on every CPU again."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, range(os.cpu_count() or 1))


def named_cpu_seconds(names: frozenset[str]) -> dict[int, float]:
    """`cpu_seconds` of each process whose command name is one of `names` (e.g. the
    Postgres and Redis servers, whichever user runs them), by process id."""
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                text = file.read()
        except OSError:
            continue  # gone meanwhile
        name = text[text.find("(") + 1 : text.rfind(")")]
        if name in names:
            fields = text.rsplit(")", 1)[1].split()
            found[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def cpu_used_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes alive at `after` used since `before` (a process started
    in between counts from 0; one that ended in between is left out)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
