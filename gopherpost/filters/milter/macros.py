# -*- test-case-name: tests.test_milter_client -*-
"""
The macros a milter is told at each stage (Sendmail's names, as Postfix
sends them).

    connect   j {daemon_name} v _ {client_addr} {client_port} {client_name}
    HELO      {tls_version} {cipher}                  (when TLS is on)
    MAIL      {auth_authen} {auth_type} {mail_addr} {mail_host}
    RCPT      {rcpt_addr} {rcpt_host}
    EOH, EOM  i                                       (the queue id)

A milter that negotiated C{SMFIF_SETSYMLIST} and named the macros it wants
at a stage gets exactly those we know.  The queue id C{i} is known from
the end of data on (GopherPost names the message when DATA is accepted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gopherpost import __version__
from gopherpost.filters.envelope import SessionFacts
from gopherpost.filters.milter.codec import Stage

__all__ = ["DEFAULTS", "macroValues", "select"]

#: The macros sent at each stage unless the milter asked for others.
DEFAULTS: dict[Stage, tuple[str, ...]] = {
    Stage.CONNECT: (
        "j",
        "{daemon_name}",
        "v",
        "_",
        "{client_addr}",
        "{client_port}",
        "{client_name}",
    ),
    Stage.HELO: ("{tls_version}", "{cipher}"),
    Stage.ENVFROM: ("{auth_authen}", "{auth_type}", "{mail_addr}", "{mail_host}"),
    Stage.ENVRCPT: ("{rcpt_addr}", "{rcpt_host}"),
    Stage.DATA: (),
    Stage.EOH: ("i",),
    Stage.EOM: ("i",),
}


def _bare(name: str) -> str:
    return name[1:-1] if name.startswith("{") and name.endswith("}") else name


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


def macroValues(
    facts: SessionFacts,
    queueId: str | None = None,
    sender: str | None = None,
    recipient: str | None = None,
) -> dict[str, str]:
    """
    Every macro we know now, by bare name (C{client_addr}, C{j}).
    """
    client = facts.clientName or f"[{facts.clientAddress}]"
    values = {
        "j": facts.serverName,
        "daemon_name": facts.daemonName,
        "v": f"GopherPost {__version__}",
        "_": f"{client} [{facts.clientAddress}]" if facts.clientName else client,
        "client_addr": facts.clientAddress,
        "client_port": str(facts.clientPort),
        "client_name": client,
    }
    if facts.tlsVersion:
        values["tls_version"] = facts.tlsVersion
    if facts.tlsCipher:
        values["cipher"] = facts.tlsCipher
    if facts.authenticatedUser:
        values["auth_authen"] = facts.authenticatedUser
        if facts.authMechanism:
            values["auth_type"] = facts.authMechanism
    if sender is not None:
        values["mail_addr"] = sender
        values["mail_host"] = _domain(sender)
    if recipient is not None:
        values["rcpt_addr"] = recipient
        values["rcpt_host"] = _domain(recipient)
    if queueId:
        values["i"] = queueId
    return values


def _wire(name: str) -> bytes:
    bare = _bare(name)
    return (bare if len(bare) == 1 else "{" + bare + "}").encode("ascii", "replace")


def select(
    stage: Stage,
    values: Mapping[str, str],
    symlists: Mapping[Stage, Sequence[bytes]],
) -> list[tuple[bytes, bytes]]:
    """
    The C{(name, value)} pairs to send at C{stage}: the milter's list for
    it if it gave one, else L{DEFAULTS}; only macros with a value.
    """
    wanted: Sequence[str]
    if stage in symlists:
        wanted = [n.decode("ascii", "replace") for n in symlists[stage]]
    else:
        wanted = DEFAULTS[stage]
    pairs = []
    for name in wanted:
        value = values.get(_bare(name))
        if value is not None:
            pairs.append((_wire(name), value.encode("utf-8", "replace")))
    return pairs
