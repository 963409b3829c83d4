"""
Reading CPU time and memory of a process tree from C{/proc}, without psutil.

A server is measured as the tree under one root process (GopherPost's
C{twistd}, Postfix's C{master}, ...).  CPU time of the tree is the sum, over
its live processes, of user + system time of the process and of its reaped
children (C{cutime}/C{cstime}): a Postfix C{smtpd} that exits during a run is
still counted, through its parent.
"""

from __future__ import annotations

import os
import threading

__all__ = [
    "CLOCK_TICKS",
    "children",
    "tree",
    "startTime",
    "cpuSeconds",
    "threadCpu",
    "memory",
    "machineCpu",
    "listenOverflows",
    "PeakSampler",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _statFields(pid: int, task: str | None = None) -> list[str] | None:
    """
    The fields of C{/proc/PID/stat} (or of one thread's,
    C{/proc/PID/task/TASK/stat}) after the command name (field 3 on).
    """
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].decode("ascii").split()


def children(pid: int) -> list[int]:
    """
    The direct children of C{pid} (all its threads').
    """
    result: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                result.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return result


def tree(root: int) -> list[int]:
    """
    C{root} and all its live descendants.
    """
    if not os.path.exists(f"/proc/{root}"):
        return []
    seen = [root]
    index = 0
    while index < len(seen):
        seen.extend(children(seen[index]))
        index += 1
    return seen


def startTime(pid: int) -> int | None:
    """
    The start time of C{pid} in clock ticks since boot (identifies it
    against PID reuse), or L{None} if it is gone.
    """
    fields = _statFields(pid)
    return int(fields[19]) if fields else None


def cpuSeconds(pids: list[int]) -> float:
    """
    User + system seconds of C{pids} and their reaped children.
    """
    ticks = 0
    for pid in pids:
        fields = _statFields(pid)
        if fields:
            # utime, stime, cutime, cstime are fields 14-17 (index 11-14 here).
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLOCK_TICKS


def threadCpu(pid: int) -> dict[str, float]:
    """
    CPU seconds of process C{pid} split by thread kind: the main thread (the
    reactor, in a Twisted server) and all other threads, each as user and
    system time.  Threads that have already exited are not counted.
    """
    split = {"main_user": 0.0, "main_system": 0.0, "threads_user": 0.0, "threads_system": 0.0}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return split
    for task in tasks:
        fields = _statFields(pid, task)
        if fields is None:
            continue
        kind = "main" if int(task) == pid else "threads"
        split[kind + "_user"] += int(fields[11]) / CLOCK_TICKS
        split[kind + "_system"] += int(fields[12]) / CLOCK_TICKS
    return split


def memory(pids: list[int]) -> tuple[int, int]:
    """
    (RSS, PSS) in bytes, summed over C{pids}.

    RSS counts shared pages (libraries, a forked parent's pages) once per
    process; PSS divides them among the processes sharing them, so a tree of
    many processes (Postfix) is not over-counted.
    """
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith(b"Pss:"):
                        pss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return rss, pss


def machineCpu() -> tuple[float, float]:
    """
    (busy, total) CPU seconds of the whole machine since boot, all cores.
    """
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def listenOverflows() -> int:
    """
    The machine's count of connections dropped because a listen queue was
    full (C{TcpExtListenOverflows}): a server whose backlog is too small for
    its clients makes them wait for SYN(-ACK) retransmissions (1 s, 2 s, ...).
    """
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return 0


class PeakSampler:
    """
    Samples the memory of a process tree in a thread until stopped; keeps
    the peaks and the number of processes at the peak.
    """

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.peakRSS = 0
        self.peakPSS = 0
        self.peakProcesses = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = tree(self.root)
        rss, pss = memory(pids)
        self.samples += 1
        self.peakRSS = max(self.peakRSS, rss)
        self.peakPSS = max(self.peakPSS, pss)
        self.peakProcesses = max(self.peakProcesses, len(pids))

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                break

    def start(self) -> PeakSampler:
        """
        Start sampling.
        """
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        """
        Take a last sample, stop, and return the peaks.
        """
        self._stop.set()
        self._thread.join()
        self._sample()
        return {
            "peak_rss": self.peakRSS,
            "peak_pss": self.peakPSS,
            "peak_processes": self.peakProcesses,
            "samples": self.samples,
        }
