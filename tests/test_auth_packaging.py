"""
The Debian package's users file: created by the postinst as
C{gopherpostctl user} would create it, kept on upgrade, removed on purge.
(C{.ci/run}'s stage 3 checks the installed result.)
"""

from __future__ import annotations

import os
import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.users import NEW_FILE_HEADER
from tests.test_packaging import _ROOT, _sourceFile


class DebianUsersFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.postinst = _sourceFile("debian", "gopherpost.postinst")
        self.postrm = _sourceFile("debian", "gopherpost.postrm")

    def test_postinstHeader(self) -> None:
        """
        The file the postinst writes starts as a new users file does.
        """
        block = self.postinst[self.postinst.index("/etc/gopherpost/users ]") :]
        lines = re.findall(r"^\s+'(#[^']*)'", block, re.M)
        self.assertEqual("".join(line + "\n" for line in lines), NEW_FILE_HEADER)

    def test_postinstModeAndKept(self) -> None:
        """
        root:gopherpost 0640, only when it does not exist (an upgrade keeps
        it).
        """
        self.assertIn("if [ ! -e /etc/gopherpost/users ]; then", self.postinst)
        self.assertIn("chown root:gopherpost /etc/gopherpost/users.dpkg-new", self.postinst)
        self.assertIn("chmod 0640 /etc/gopherpost/users.dpkg-new", self.postinst)

    def test_postrmPurge(self) -> None:
        purge = self.postrm[self.postrm.index('if [ "$1" = purge ]') :]
        self.assertIn("rm -f /etc/gopherpost/users", purge)

    def test_shellSyntax(self) -> None:
        for name in ("gopherpost.postinst", "gopherpost.postrm"):
            path = os.path.join(_ROOT, "debian", name)
            result = subprocess.run(["sh", "-n", path], capture_output=True, timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr)
