"""
Tests for L{gopherpost.priority}.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.priority import NICENESS


class LowerPriorityTests(SynchronousTestCase):
    """
    L{gopherpost.priority.lowerPriority} in a process of its own.
    """

    def test_lowest(self) -> None:
        """
        The process ends up at nice +19 (or as far as it can go) and, on
        Linux, under C{SCHED_IDLE}.
        """
        code = (
            "import os\n"
            "from gopherpost.priority import lowerPriority\n"
            "lowerPriority()\n"
            "print(os.nice(0), os.sched_getscheduler(0) if hasattr(os, 'SCHED_IDLE') else -1)\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        self.assertEqual(int(out[0]), min(19, os.nice(0) + NICENESS))
        if hasattr(os, "SCHED_IDLE"):
            self.assertEqual(int(out[1]), os.SCHED_IDLE)
