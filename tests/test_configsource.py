"""
Tests for L{gopherpost.configsource}: environment, env file and command
line merged, each value's origin, errors that say where they were set.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import ConfigError, settingsFromEnvironment
from gopherpost.configsource import (
    COMMAND_LINE,
    DEFAULT,
    ENV_FILE,
    ENVIRONMENT,
    ConfigSource,
    describeConfiguration,
    explain,
)


class ConfigSourceTests(SynchronousTestCase):
    """
    Precedence: command line, then the real environment, then the file.
    """

    def envFile(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_precedence(self) -> None:
        """
        The real environment wins over the file (also when empty), the
        command line over both; each value remembers where it came from.
        """
        path = self.envFile("SMTP_PORT=2600\nSMTP_BANNER=from file\nSMTP_DEBUG=true\n")
        source = ConfigSource(
            {"SMTP_BANNER": "from environment", "SMTP_DEBUG": ""},
            envFile=path,
            overrides={"SMTP_HOSTNAME": "cli.test"},
        )
        loaded = source.load()
        self.assertEqual(loaded.variables["SMTP_PORT"], "2600")
        self.assertEqual(loaded.variables["SMTP_BANNER"], "from environment")
        self.assertEqual(loaded.variables["SMTP_DEBUG"], "")
        self.assertEqual(loaded.originOf("SMTP_PORT"), ENV_FILE)
        self.assertEqual(loaded.originOf("SMTP_BANNER"), ENVIRONMENT)
        self.assertEqual(loaded.originOf("SMTP_DEBUG"), DEFAULT)
        self.assertEqual(loaded.originOf("SMTP_HOSTNAME"), COMMAND_LINE)
        self.assertEqual(loaded.originOf("SMTP_MAX_RECIPIENTS"), DEFAULT)
        self.assertEqual(loaded.envFile, path)
        self.assertEqual(loaded.envFileOrigin, COMMAND_LINE)
        self.assertEqual(loaded.describeOrigin("SMTP_PORT"), f"env file {path}, line 1")

    def test_readAgain(self) -> None:
        """
        Every load reads the file again: an edited file is seen.
        """
        path = self.envFile("SMTP_BANNER=one\n")
        source = ConfigSource({}, envFile=path)
        self.assertEqual(source.load().variables["SMTP_BANNER"], "one")
        with open(path, "w") as f:
            f.write("SMTP_BANNER=two\n")
        self.assertEqual(source.load().variables["SMTP_BANNER"], "two")

    def test_namedByVariable(self) -> None:
        """
        Without C{--env-file}, C{SMTP_ENV_FILE} names the file.
        """
        path = self.envFile("SMTP_BANNER=named\n")
        loaded = ConfigSource({"SMTP_ENV_FILE": path}).load()
        self.assertEqual(loaded.variables["SMTP_BANNER"], "named")
        self.assertEqual(loaded.envFileOrigin, ENVIRONMENT)

    def test_defaultFileOptional(self) -> None:
        """
        The default file is read when it exists and skipped when it does
        not; a file that is named must exist, and the error says which
        option named it.
        """
        missing = os.path.abspath(self.mktemp())
        self.assertIsNone(ConfigSource({}, defaultEnvFile=missing).load().envFile)
        present = self.envFile("SMTP_BANNER=default file\n")
        loaded = ConfigSource({}, defaultEnvFile=present).load()
        self.assertEqual(loaded.variables["SMTP_BANNER"], "default file")
        self.assertEqual(loaded.envFileOrigin, DEFAULT)
        error = self.assertRaises(ConfigError, ConfigSource({}, envFile=missing).load)
        self.assertEqual(error.variable, "--env-file")
        self.assertIn("does not exist", str(error))
        error = self.assertRaises(ConfigError, ConfigSource({"SMTP_ENV_FILE": missing}).load)
        self.assertEqual(error.variable, "SMTP_ENV_FILE")

    def test_unreadable(self) -> None:
        """
        A directory or a file that is not UTF-8 is one clear error.
        """
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        error = self.assertRaises(ConfigError, ConfigSource({}, envFile=directory).load)
        self.assertIn("is a directory", str(error))
        binary = os.path.abspath(self.mktemp())
        with open(binary, "wb") as f:
            f.write(b"SMTP_BANNER=\xff\n")
        error = self.assertRaises(ConfigError, ConfigSource({}, envFile=binary).load)
        self.assertIn("not UTF-8", str(error))

    def test_problems(self) -> None:
        """
        A line that does not parse is reported with the file and line, and
        the others are read.
        """
        path = self.envFile("SMTP_PORT=2600\nthis is not a setting\nexport SMTP_BANNER='x y'\n")
        loaded = ConfigSource({}, envFile=path).load()
        self.assertEqual(loaded.variables["SMTP_BANNER"], "x y")
        self.assertEqual(loaded.lines["SMTP_BANNER"], 3)
        self.assertEqual(
            loaded.problems, (f"{path}, line 2: cannot parse 'this is not a setting'; ignored",)
        )

    def test_explain(self) -> None:
        """
        An error about a value from the env file says which file and line;
        one from the command line says so; one from the environment is as
        it is.
        """
        path = self.envFile("SMTP_BANNER=ok\nSMTP_PORT=nonsense\n")
        loaded = ConfigSource(
            {"SMTP_MAX_RECIPIENTS": "many"}, envFile=path, overrides={"SMTP_HOSTNAME": "-x"}
        ).load()
        error = ConfigError("SMTP_PORT", "'nonsense' is not a valid TCP port (1-65535)")
        self.assertEqual(
            explain(error, loaded),
            f"SMTP_PORT: 'nonsense' is not a valid TCP port (1-65535) "
            f"(set in the env file {path}, line 2)",
        )
        self.assertEqual(
            explain(ConfigError("SMTP_HOSTNAME", "bad"), loaded),
            "SMTP_HOSTNAME: bad (set on the command line)",
        )
        self.assertEqual(
            explain(ConfigError("SMTP_MAX_RECIPIENTS", "bad"), loaded), "SMTP_MAX_RECIPIENTS: bad"
        )
        self.assertEqual(explain(error, None), str(error))

    def test_describeConfiguration(self) -> None:
        """
        Every variable with its effective value and origin; defaults are the
        values in use; secrets never show.
        """
        path = self.envFile("SMTP_DKIM_PRIVATE_KEY=-----BEGIN PRIVATE KEY-----\n")
        loaded = ConfigSource(
            {
                "SMTP_HOSTNAME": "mx.test",
                "SMTP_DKIM_SELECTOR": "s1",
                "SMTP_REDIS_URL": "redis://user:hunter2@redis.test:6379/0",
            },
            envFile=path,
        ).load()
        settings = settingsFromEnvironment(loaded.variables, checkFiles=False)
        rows = {r["variable"]: r for r in describeConfiguration(settings, loaded)}
        self.assertEqual(
            rows["SMTP_PORT"], {"variable": "SMTP_PORT", "value": "2525", "origin": "default"}
        )
        self.assertEqual(rows["SMTP_HOSTNAME"]["origin"], "environment")
        self.assertEqual(rows["SMTP_DKIM_PRIVATE_KEY"]["value"], "********")
        self.assertEqual(rows["SMTP_DKIM_PRIVATE_KEY"]["origin"], f"env file {path}, line 1")
        self.assertEqual(rows["SMTP_REDIS_URL"]["value"], "redis://user:***@redis.test:6379/0")
        self.assertEqual(rows["SMTP_ENV_FILE"]["value"], path)
        self.assertEqual(rows["SMTP_RETRY_MAX"]["value"], "3840")
        self.assertEqual(rows["SMTP_LOCAL_DOMAINS"]["value"], "mx.test")
        self.assertNotIn("hunter2", repr(rows))
