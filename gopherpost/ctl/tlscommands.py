# -*- test-case-name: tests.test_ctl -*-
"""
C{gopherpostctl tls status} and C{gopherpostctl tls renew}: the certificate
GopherPost obtains over ACME (what C{certbot certificates} and C{certbot
renew --force-renewal} give).  Both ask the running server, which owns the
ACME account and the renewal schedule.
"""

from __future__ import annotations

import argparse
from typing import Any

from gopherpost.ctl.registry import EXIT_OK, CommandGroup, Context, CtlError, addJSONOption

__all__ = ["GROUP", "formatTLSStatus"]

_NOT_ACME = "the running server does not use ACME (SMTP_ACME_DOMAINS is empty)"


def formatTLSStatus(status: dict[str, Any]) -> str:
    """
    C{tls.status}'s answer as text.
    """
    certificate = status["certificate"]
    lines = [
        f"Certificate: {', '.join(certificate['names'])} ({certificate['origin']})",
        f"  issuer:        {certificate['issuer']}",
        f"  serial:        {certificate['serial']}",
        f"  valid:         {certificate['notBefore']} to {certificate['notAfter']}",
        f"  next renewal:  {status.get('nextRenewal') or 'once the first certificate is issued'}",
        f"  directory:     {status['directory']}",
        f"  account:       {status.get('account') or 'not registered yet'}",
    ]
    if status.get("ordering"):
        lines.append("  an order is in progress")
    if status.get("lastError"):
        lines.append(
            f"  last error:    {status['lastError']} ({status.get('failures', 0)} failures)"
        )
    if status.get("nextAttempt"):
        reason = status.get("nextAttemptReason")
        lines.append(
            f"  next attempt:  {status['nextAttempt']}" + (f" ({reason})" if reason else "")
        )
    return "\n".join(lines) + "\n"


def _call(context: Context, command: str) -> Any:
    try:
        return context.call(command)
    except CtlError as e:
        if "does not offer" in e.message:
            raise CtlError(_NOT_ACME) from None
        raise


def _status(context: Context) -> int:
    status = _call(context, "tls.status")
    if context.args.json:
        context.printJSON(status)
    else:
        context.out.write(formatTLSStatus(status))
    return EXIT_OK


def _renew(context: Context) -> int:
    status = _call(context, "tls.renew")
    if context.args.json:
        context.printJSON(status)
    else:
        context.out.write("Certificate renewed; new TLS sessions get it.\n")
        context.out.write(formatTLSStatus(status))
    return EXIT_OK


def _configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(title="tls commands", metavar="COMMAND", dest="command")
    commands.required = True
    status = commands.add_parser(
        "status",
        help="the certificate served: issuer, names, expiry, next renewal",
        description="The certificate new TLS sessions get, where it comes from, when it "
        "expires and when GopherPost renews it; the last ACME error.  Asks the running "
        "server (exit status 3 when it is not running).",
    )
    addJSONOption(status)
    status.set_defaults(handler=_status)
    renew = commands.add_parser(
        "renew",
        help="order a new certificate now and wait until it serves",
        description="Order a certificate from the ACME CA now, whether or not one is due, "
        "and wait until new TLS sessions get it (exit status 1 with the CA's reason when "
        "the order fails).  Carried out by the running server.",
    )
    addJSONOption(renew)
    renew.set_defaults(handler=_renew)


GROUP = CommandGroup("tls", "the ACME certificate: status, renew now", _configure)
