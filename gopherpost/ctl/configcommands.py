# -*- test-case-name: tests.test_ctl_config -*-
"""
C{gopherpostctl config}: the configuration, as Postfix's C{postconf} and
C{postfix check} give it.

  - C{show}: every variable's effective value and where it comes from
    (default, environment, env file), secrets masked; from the running
    server when there is one (its environment is not this shell's);
  - C{check}: validate as start-up does, without starting;
  - C{reload}: make the running server reload (as SIGHUP) and say what
    changed.
"""

from __future__ import annotations

import argparse
import os

from gopherpost.config import ConfigError, Settings, settingsFromEnvironment
from gopherpost.configsource import LoadedEnvironment, describeConfiguration, explain
from gopherpost.ctl.registry import (
    EXIT_FAILURE,
    EXIT_OK,
    CommandGroup,
    Context,
    CtlError,
    addJSONOption,
)

__all__ = ["GROUP", "checkConfiguration", "formatVariables"]


def checkConfiguration(loaded: LoadedEnvironment) -> Settings:
    """
    Validate as start-up does, without starting: every variable, the TLS
    certificate and key, the DKIM key, the outbound trust store, and that
    the spool can be a directory.  Nothing is written.

    @raise ConfigError: the first problem.
    """
    from gopherpost import dkim, tls
    from gopherpost.wiring import _checkOutboundTrust

    settings = settingsFromEnvironment(loaded.variables)
    if not settings.tlsDisable and settings.tlsCert is not None and settings.tlsKey is not None:
        tls.loadServerContextFactory(settings.tlsCert, settings.tlsKey)
    dkim.loadSigner(settings)
    _checkOutboundTrust(settings)
    path = settings.queuePath
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("SMTP_QUEUE_PATH", f"{path} is not a directory")
    return settings


def formatVariables(rows: list[dict[str, str]], nonDefault: bool) -> str:
    """
    C{config show} as text: C{NAME=value}, then where it comes from.
    """
    shown = [r for r in rows if not (nonDefault and r["origin"] == "default")]
    width = max((len(r["variable"]) + len(r["value"]) + 1 for r in shown), default=0)
    width = min(width, 60)
    lines = []
    for row in shown:
        assignment = f"{row['variable']}={row['value']}"
        lines.append(f"{assignment:<{width}}  # {row['origin']}")
    return "\n".join(lines) + ("\n" if lines else "")


def _show(context: Context) -> int:
    args = context.args
    running, result = (False, None) if args.local else context.tryCall("config.show")
    if running:
        assert result is not None
        rows = result["variables"]
    else:
        loaded = context.loaded()
        try:
            settings = settingsFromEnvironment(loaded.variables, checkFiles=False)
        except ConfigError as e:
            raise CtlError(f"invalid configuration: {explain(e, loaded)}") from None
        rows = describeConfiguration(settings, loaded)
        if not args.json and not args.local:
            where = loaded.envFile or "no env file"
            context.note(f"the server is not running: computed from this environment and {where}")
    if args.json:
        context.printJSON({"variables": rows})
    else:
        context.out.write(formatVariables(rows, args.non_default))
    return EXIT_OK


def _check(context: Context) -> int:
    from gopherpost.startup import configurationWarnings

    loaded = context.loaded()
    try:
        settings = checkConfiguration(loaded)
    except ConfigError as e:
        raise CtlError(explain(e, loaded)) from None
    for warning in configurationWarnings(loaded, settings):
        context.note(f"warning: {warning}")
    where = f"env file {loaded.envFile}" if loaded.envFile else "no env file"
    context.out.write(f"configuration OK ({where})\n")
    return EXIT_OK


def _reload(context: Context) -> int:
    outcome = context.call("config.reload")
    if context.args.json:
        context.printJSON(outcome)
    else:
        context.out.write(outcome["message"] + "\n")
    return EXIT_OK if outcome["succeeded"] else EXIT_FAILURE


def _configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(title="config commands", metavar="COMMAND", dest="command")
    commands.required = True

    show = commands.add_parser(
        "show",
        help="every variable's effective value and origin (postconf)",
        description="Every variable with its effective value and where it comes from "
        "(default, environment, env file), secrets masked.  Asks the running server; "
        "with the server stopped (or --local), computed here.",
    )
    show.add_argument(
        "-n", "--non-default", action="store_true", help="only the variables that are set"
    )
    show.add_argument(
        "--local",
        action="store_true",
        help="as a server started here would see it, even if one is running",
    )
    show.add_argument(
        "--env-file", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    addJSONOption(show)
    show.set_defaults(handler=_show)

    check = commands.add_parser(
        "check",
        help="validate without starting (postfix check)",
        description="Validate the configuration as start-up does (every variable, the "
        "TLS certificate and key, the DKIM key), without starting: exit 0 and "
        "'configuration OK', or exit 1 and the one-line error.",
    )
    check.add_argument(
        "--env-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the env file to check (as the global --env-file)",
    )
    check.set_defaults(handler=_check)

    reload = commands.add_parser(
        "reload",
        help="make the running server reload (as SIGHUP / systemctl reload)",
        description="Make the running server read its configuration again and apply it "
        "to new sessions and delivery attempts; prints what changed, or why nothing "
        "did (exit 1).",
    )
    addJSONOption(reload)
    reload.set_defaults(handler=_reload)


GROUP = CommandGroup("config", "the configuration: show, check, reload", _configure)
