# -*- test-case-name: tests.test_esmtp_dsnparams -*-
"""
The keys these extensions use in an envelope's C{metadata}
(L{gopherpost.spool.Envelope.metadata}), set by the receiving side and read
by the relay.  Each is present only when it says something, so the envelope
of a plain message has none of them:

  - C{"smtputf8": true}: the MAIL command had C{SMTPUTF8} (RFC 6531);
  - C{"requiretls": true}: the MAIL command had C{REQUIRETLS} (RFC 8689),
    read by L{gopherpost.tlspolicy.requiretls} as C{METADATA_KEY};
  - C{"dsn": {...}}: the DSN parameters (RFC 3461), see
    L{gopherpost.esmtp.dsnparams}: C{"ret"} (C{"FULL"} or C{"HDRS"}),
    C{"envid"} (the xtext as given) and C{"recipients"}, a map from each
    recipient's address (as stored in the envelope) to its C{"notify"}
    (e.g. C{"SUCCESS,DELAY"}) and C{"orcpt"} (as given, e.g.
    C{"rfc822;bob+2Bx@example.test"}).
"""

from __future__ import annotations

__all__ = ["SMTPUTF8", "REQUIRETLS", "DSN"]

#: The message was received with SMTPUTF8.
SMTPUTF8 = "smtputf8"
#: The message was received with REQUIRETLS.
REQUIRETLS = "requiretls"
#: The DSN parameters of the message and its recipients.
DSN = "dsn"
