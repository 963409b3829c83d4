# -*- test-case-name: tests.test_configsource -*-
"""
Where the configuration comes from: the real environment, an env file and
(for C{twistd gopherpost}) command-line options, merged with the
precedence command line, then environment, then file, and with each
variable's origin remembered.

The env file is C{--env-file PATH}, else C{SMTP_ENV_FILE}, else C{.env} in
the working directory (when it exists).  A file named explicitly must
exist.  The server reads it again on every reload (SIGHUP), so that
C{systemctl reload} sees an edited file; the real environment is the one
the process started with.

L{ConfigSource.load} gives a L{LoadedEnvironment}; L{explain} adds to a
L{ConfigError} where the bad value came from, e.g. C{"SMTP_PORT: 'x' is
not a valid TCP port (1-65535) (set in /etc/gopherpost/gopherpost.env,
line 12)"}.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gopherpost.config import ConfigError
from gopherpost.variables import ENV_FILE_VARIABLE

__all__ = [
    "DEFAULT",
    "ENVIRONMENT",
    "ENV_FILE",
    "COMMAND_LINE",
    "DEFAULT_ENV_FILE",
    "ConfigSource",
    "LoadedEnvironment",
    "describeConfiguration",
    "explain",
]

#: Origins of a value.
DEFAULT = "default"
ENVIRONMENT = "environment"
ENV_FILE = "env file"
COMMAND_LINE = "command line"

#: The env file read when none is named (if it exists).
DEFAULT_ENV_FILE = ".env"

# python-dotenv logs a warning of its own for every line it cannot parse;
# we report those lines ourselves, with the file's name.
logging.getLogger("dotenv.main").setLevel(logging.ERROR)


@dataclass(frozen=True)
class LoadedEnvironment:
    """
    The variables as one process sees them.

    @ivar variables: every variable, merged.
    @ivar origins: per variable, L{ENVIRONMENT}, L{ENV_FILE} or
        L{COMMAND_LINE} (variables not listed take their default).
    @ivar envFile: the absolute path of the env file read, or L{None}.
    @ivar lines: per variable from the env file, its line there.
    @ivar problems: one line per env-file line that does not parse.
    @ivar envFileOrigin: what named the env file: L{COMMAND_LINE}
        (C{--env-file}), L{ENVIRONMENT} (C{SMTP_ENV_FILE}) or L{DEFAULT}.
    """

    variables: dict[str, str]
    origins: dict[str, str] = field(default_factory=dict)
    envFile: str | None = None
    lines: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    envFileOrigin: str = DEFAULT

    def originOf(self, name: str) -> str:
        """
        Where the value of C{name} comes from (L{DEFAULT} when unset or
        empty).
        """
        value = self.variables.get(name)
        if value is None or not value.strip():
            return DEFAULT
        return self.origins.get(name, ENVIRONMENT)

    def describeOrigin(self, name: str) -> str:
        """
        The origin of C{name} for people: C{"env file /etc/x.env, line 3"},
        C{"environment"}, C{"default"}.
        """
        origin = self.originOf(name)
        if origin == ENV_FILE and self.envFile is not None:
            line = self.lines.get(name)
            where = f"env file {self.envFile}"
            return f"{where}, line {line}" if line else where
        return origin


class ConfigSource:
    """
    The environment, env file and overrides of one process, read again on
    every L{load}.

    @param environ: the real environment (captured at start-up).
    @param envFile: C{--env-file}, or L{None} to use C{SMTP_ENV_FILE} or
        C{defaultEnvFile}.
    @param overrides: variables set on the command line (they win).
    @param defaultEnvFile: read when no file is named, if it exists;
        L{None}: none.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        envFile: str | None = None,
        overrides: Mapping[str, str] | None = None,
        defaultEnvFile: str | None = DEFAULT_ENV_FILE,
    ) -> None:
        self.environ = dict(environ)
        self.overrides = dict(overrides or {})
        self._option = envFile
        self._default = defaultEnvFile

    @property
    def envFile(self) -> tuple[str | None, str | None]:
        """
        The env file to read and what named it: C{("--env-file" |
        "SMTP_ENV_FILE", path)} for a file that must exist,
        C{(None, path)} for the default (read if it exists), or
        C{(None, None)}.
        """
        if self._option is not None:
            return ("--env-file", self._option)
        named = self.environ.get(ENV_FILE_VARIABLE, "").strip()
        if named:
            return (ENV_FILE_VARIABLE, named)
        return (None, self._default)

    def load(self) -> LoadedEnvironment:
        """
        Read the env file (again) and merge.

        @raise ConfigError: a named env file does not exist or cannot be
            read (naming C{--env-file} or C{SMTP_ENV_FILE}).
        """
        namedBy, path = self.envFile
        fromFile: dict[str, str] = {}
        lines: dict[str, int] = {}
        problems: tuple[str, ...] = ()
        absolute = None
        if path is not None:
            if namedBy is None and not os.path.isfile(path):
                path = None
            else:
                absolute = os.path.abspath(path)
                fromFile, lines, problems = _readEnvFile(absolute, namedBy or ENV_FILE_VARIABLE)
        variables = dict(fromFile)
        origins = {name: ENV_FILE for name in fromFile}
        for name, value in self.environ.items():
            variables[name] = value
            origins[name] = ENVIRONMENT
        for name, value in self.overrides.items():
            variables[name] = value
            origins[name] = COMMAND_LINE
        namedOrigin = {"--env-file": COMMAND_LINE, ENV_FILE_VARIABLE: ENVIRONMENT}.get(
            namedBy or "", DEFAULT
        )
        return LoadedEnvironment(variables, origins, absolute, lines, problems, namedOrigin)


def _readEnvFile(
    path: str, variable: str
) -> tuple[dict[str, str], dict[str, int], tuple[str, ...]]:
    """
    The variables of an env file, the line of each, and the lines that do
    not parse.

    @raise ConfigError: naming C{variable}, if the file cannot be read.
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(variable, f"env file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(variable, f"env file {path!r} is a directory") from None
    except UnicodeDecodeError as e:
        raise ConfigError(variable, f"env file {path!r} is not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ConfigError(variable, f"env file {path!r} cannot be read: {e.strerror}") from None
    lines: dict[str, int] = {}
    problems = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            statement = binding.original.string.strip().splitlines()[0][:60]
            problems.append(
                f"{path}, line {binding.original.line}: cannot parse {statement!r}; ignored"
            )
        elif binding.key is not None:
            lines[binding.key] = binding.original.line
    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    return values, lines, tuple(problems)


def explain(error: ConfigError, loaded: LoadedEnvironment | None) -> str:
    """
    C{error} as one line, saying where the bad value was set when it came
    from the env file or the command line.
    """
    if loaded is None:
        return str(error)
    origin = loaded.originOf(error.variable)
    if origin == ENV_FILE:
        where = loaded.describeOrigin(error.variable).removeprefix("env file ")
        return f"{error} (set in the env file {where})"
    if origin == COMMAND_LINE:
        return f"{error} (set on the command line)"
    return str(error)


def describeConfiguration(settings: Any, loaded: LoadedEnvironment) -> list[dict[str, str]]:
    """
    Every known variable with its effective value (secrets masked) and
    where it comes from, for C{gopherpostctl config show}.

    @param settings: the L{gopherpost.config.Settings} in use.
    @return: C{{"variable", "value", "origin"}} per variable, in the order
        of L{gopherpost.variables.VARIABLES}.
    """
    from gopherpost.variables import VARIABLES, effectiveValues

    values = effectiveValues(settings, loaded.variables)
    rows = []
    for variable in VARIABLES:
        if variable.name == ENV_FILE_VARIABLE:
            value = loaded.envFile or ""
            origin = loaded.envFileOrigin
        else:
            value = values[variable.name]
            origin = loaded.describeOrigin(variable.name)
        rows.append({"variable": variable.name, "value": value, "origin": origin})
    return rows
