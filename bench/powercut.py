"""
What a power cut would leave of the spool, at every step of the commit path.

kill -9 keeps the page cache, so the kill tests cannot see a missing sync.
This tool can: it puts a spool on a small file system image (ext4 or XFS) on a
loop device, commits messages, and at the chosen step of the commit path
(L{gopherpost.faults.COMMIT_STEPS}) copies the image's backing file: the copy
holds exactly what the device had been given at that instant, as a disk
holds after a power cut once its cache is flushed.  It mounts the copy (the
journal is replayed) and checks:

  - every message acknowledged before the cut is there, whole;
  - the message cut after C{names-synced} (its names were synced, it is
    about to be acknowledged) is there, whole;
  - any other message that is visible (has an envelope) is whole;
  - the spool's recovery leaves an envelope for every C{.eml} and the reverse.

Background commits are held off while it runs (ext4 C{commit=3600}), so only
the spool's own syncs reach the journal.  C{--negative} runs it with a
strategy that skips the syncs of the names (C{names}) or of the data
(C{data}): the checks must then fail, which shows that they can.  Needs root (loop devices, mounts).

    sudo python3 bench/powercut.py                 # ext4, every step, alone and in a burst
    sudo python3 bench/powercut.py --fs xfs --negative names
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)

from twisted.internet.defer import Deferred, maybeDeferred  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from zope.interface import implementer  # noqa: E402

from gopherpost.faults import COMMIT_STEPS, CrashPoints  # noqa: E402
from gopherpost.spool import Envelope, Spool  # noqa: E402
from gopherpost.syncstrategy import ISyncStrategy, chooseSyncStrategy, strategyNamed  # noqa: E402

NAMES_SYNCED = COMMIT_STEPS.index("names-synced")
ACKNOWLEDGED = COMMIT_STEPS.index("acknowledged")


def sh(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class Image:
    """
    A file system image on a loop device, mounted.
    """

    def __init__(self, work: str, kind: str, name: str) -> None:
        self.backing = os.path.join(work, f"{name}.img")
        self.mount = os.path.join(work, name)
        os.makedirs(self.mount)
        with open(self.backing, "wb") as f:
            f.truncate(320 * 1024 * 1024)
        if kind == "ext4":
            sh(
                "mkfs.ext4",
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                self.backing,
            )
        else:
            sh("mkfs.xfs", "-q", "-f", self.backing)
        self.device = sh("losetup", "--find", "--show", self.backing)
        options = "commit=3600" if kind == "ext4" else "defaults"
        sh("mount", "-o", options, self.device, self.mount)

    def copy(self, target: str) -> None:
        """
        The device's content now (completed writes), as a power cut leaves
        it.
        """
        shutil.copyfile(self.backing, target)

    def close(self) -> None:
        if subprocess.run(["umount", self.mount], capture_output=True).returncode:
            subprocess.run(["umount", "-l", self.mount], capture_output=True)
        subprocess.run(["losetup", "-d", self.device], capture_output=True)


class CutAt(CrashPoints):
    """
    Copies the image at the C{occurrence}-th time a message reaches C{step}.
    """

    def __init__(self, step: str, occurrence: int, image: Image, target: str) -> None:
        CrashPoints.__init__(self)
        self.cutStep, self.left, self.image, self.target = step, occurrence, image, target
        self.cut = False

    def reached(self, step: str) -> None:
        if step == self.cutStep and not self.cut:
            self.left -= 1
            if self.left == 0:
                self.image.copy(self.target)
                self.cut = True


@implementer(ISyncStrategy)
class Skipping:
    """
    Negative control: skips the names' syncs (C{"names"}) or the data's
    (C{"data"}).
    """

    def __init__(self, real: Any, skip: str) -> None:
        self.real = real
        self.skip = skip
        self.name = f"{real.name} without {skip}"

    def sync(self, files: Any, directories: Any) -> None:
        if self.skip == "names":
            self.real.sync(files, [])
        else:
            self.real.sync([], directories)


class Deferring:
    """
    Holds every sync until L{drain}, so that a burst of commits fills the
    pipeline.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred, Any, tuple]] = []

    def __call__(self, f: Any, *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append((d, f, args))
        return d

    def drain(self) -> None:
        while self.waiting:
            d, f, args = self.waiting.pop(0)
            maybeDeferred(f, *args).chainDeferred(d)


def body(number: int) -> bytes:
    return b"Subject: cut %d\r\n\r\n" % number + (b"z" * 70 + b"\r\n") * (50 + 1000 * (number % 2))


def run(
    kind: str, step: str, burst: bool, negative: str | None, forced: str | None, work: str
) -> tuple[str, list[str]]:
    """
    One cut; return the strategy's name and what is wrong (nothing: the
    step is safe).
    """
    image = Image(work, kind, "live")
    snapshot = os.path.join(work, "cut.img")
    problems: list[str] = []
    try:
        path = os.path.join(image.mount, "spool")
        count = 6 if burst else 3
        occurrence = 3 if burst else 2
        cut = CutAt(step, occurrence, image, snapshot)
        strategy: Any = (
            strategyNamed(forced, image.mount) if forced else chooseSyncStrategy(image.mount)
        )
        if negative:
            strategy = Skipping(strategy, negative)
        runner = Deferring() if burst else maybeDeferred
        clock = Clock()
        clock.advance(1795046000)
        spool = Spool(path, clock, runInThread=runner, syncStrategy=strategy, crashPoints=cut)
        spool.open()
        acknowledgedBeforeCut: list[Envelope] = []
        for number in range(count):
            writer = spool.newWriter()
            writer.write(body(number))
            d = spool.commit(
                writer, "", [("a@cut.test", False), ("b@cut.test", False)], "192.0.2.1", "c", False
            )

            def acknowledged(envelope: Envelope) -> None:
                if not cut.cut:
                    acknowledgedBeforeCut.append(envelope)

            d.addCallback(acknowledged)
        if burst:
            runner.drain()  # type: ignore[union-attr]
        if not cut.cut:
            return strategy.name, [f"step {step} was never reached"]
    finally:
        image.close()
    copy = Image.__new__(Image)
    copy.backing, copy.mount = snapshot, os.path.join(work, "copy")
    os.makedirs(copy.mount)
    copy.device = sh("losetup", "--find", "--show", snapshot)
    try:
        # The copy has the live file system's UUID, which XFS refuses twice.
        sh("mount", "-o", "nouuid" if kind == "xfs" else "defaults", copy.device, copy.mount)
        spoolPath = os.path.join(copy.mount, "spool")
        found = onDisk(spoolPath)
        for envelope in acknowledgedBeforeCut:
            if envelope.queueId not in found["envelopes"]:
                problems.append(f"acknowledged {envelope.queueId} lost")
        for queueId, (envelope, contents) in found["whole"].items():
            if len(contents) != 2 or {len(c) for c in contents} != {envelope.size}:
                problems.append(f"visible {queueId} not whole: {[len(c) for c in contents]}")
        if NAMES_SYNCED <= COMMIT_STEPS.index(step) < ACKNOWLEDGED:
            # The message cut at this step had its names synced but was
            # not acknowledged yet: at least one more message is there.
            # (From "acknowledged" on it is among the acknowledged.)
            if len(found["envelopes"]) < len(acknowledgedBeforeCut) + 1:
                problems.append(f"a message whose names were synced is lost at {step}")
        problems += found["unreadable"]
        clock = Clock()
        recovered = Spool(spoolPath, clock, runInThread=maybeDeferred)
        recovered.open()
        after = onDisk(spoolPath)
        if set(after["emls"]) != set(after["envelopes"]):
            problems.append("after recovery, .eml and envelopes differ")
    finally:
        subprocess.run(["umount", copy.mount], capture_output=True)
        subprocess.run(["losetup", "-d", copy.device], capture_output=True)
    return strategy.name, problems


def onDisk(spoolPath: str) -> dict[str, Any]:
    emls: dict[str, list[bytes]] = {}
    envelopes: dict[str, Envelope] = {}
    unreadable = []
    for directory in sorted(os.listdir(spoolPath)):
        if not directory[:2] == "20":
            continue
        for name in os.listdir(os.path.join(spoolPath, directory)):
            with open(os.path.join(spoolPath, directory, name), "rb") as f:
                data = f.read()
            if name.endswith(".eml"):
                emls.setdefault(name.split("_")[0], []).append(data)
            elif name.endswith(".envelope"):
                try:
                    envelopes[name[: -len(".envelope")]] = Envelope.fromJSON(data)
                except ValueError:
                    unreadable.append(f"unreadable envelope {name} ({len(data)} bytes)")
    whole = {q: (e, emls.get(q, [])) for q, e in envelopes.items()}
    return {"emls": emls, "envelopes": envelopes, "whole": whole, "unreadable": unreadable}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fs", choices=("ext4", "xfs"), default="ext4")
    parser.add_argument("--steps", default=",".join(COMMIT_STEPS))
    parser.add_argument(
        "--strategy", choices=("range", "syncfs", "fsync"), help="force one (default: as chosen)"
    )
    parser.add_argument(
        "--negative",
        choices=("names", "data"),
        help="skip the syncs of the names, or of the data: the checks must then fail",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("powercut: must run as root (loop devices, mounts)", file=sys.stderr)
        return 2
    failures = 0
    for step in args.steps.split(","):
        for burst in (False, True):
            work = tempfile.mkdtemp(prefix="gopherpost-powercut-", dir="/dev/shm")
            try:
                name, problems = run(args.fs, step, burst, args.negative, args.strategy, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            mode = "burst" if burst else "alone"
            label = f"{args.fs} {name} {step:18s} {mode:5s}"
            print(f"{label}: " + ("ok" if not problems else "; ".join(problems)))
            failures += bool(problems)
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
