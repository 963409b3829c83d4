"""
The C{twistd gopherpost} plugin: one L{ServiceMaker}, importing
L{gopherpost.tap} only when the plugin is used.

This directory must not contain an C{__init__.py}: C{twisted.plugins} is
Twisted's own package, and this file is merely dropped into it.
"""

from twisted.application.service import ServiceMaker

gopherpost = ServiceMaker(
    "GopherPost",
    "gopherpost.tap",
    "A durable ESMTP server, configured by SMTP_* environment variables.",
    "gopherpost",
)
