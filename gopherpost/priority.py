# -*- test-case-name: tests.test_priority -*-
"""
The lowest CPU priority, for the helper processes whose work can wait
(the webhook courier, the message index worker): SMTP acceptance wins the
CPU, and they use what is left over.
"""

from __future__ import annotations

import os

__all__ = ["NICENESS", "lowerPriority"]

#: How much lower a helper's CPU priority is than the server's: the most
#: there is (19), so that a busy server keeps nearly all of a shared core
#: (a nice 19 process weighs 15 against the server's 1024); at 10 the
#: webhook courier still took a tenth, and SMTP acceptance paid for it.
NICENESS = 19


def lowerPriority() -> None:
    """
    Make this process yield the CPU to everything else: C{nice}
    +L{NICENESS} and, on Linux, the C{SCHED_IDLE} policy.  A nice process
    that got a core still runs out its time slice when the server wakes up
    wanting it; one under C{SCHED_IDLE} is preempted at once, so the SMTP
    side never waits for it.  Under a load that keeps every core busy it
    waits until the load ends.
    """
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is not None:
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except OSError:
            pass
