# -*- test-case-name: tests.test_acme_source -*-
"""
The seam between whatever provides the server's certificate (ACME, a file,
the self-signed fallback) and the inbound TLS that serves it.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["ICertificateSource"]


class ICertificateSource(Interface):
    """
    Provides the certificate that new inbound TLS sessions should get.

    L{gopherpost.acme.source.CertificateSwitch} asks for it on every new
    connection; a session in progress keeps the certificate it started
    with.
    """

    def currentCertificate() -> object:
        """
        The certificate to serve now.

        Called on the reactor thread for every new TLS connection: it must
        return at once, without I/O.

        @return: a L{gopherpost.acme.source.ServedCertificate}.
        """
