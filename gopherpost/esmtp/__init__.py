"""
ESMTP extensions shared by the receiving and the relaying side, as plain
functions and values (no I/O, no SMTP state):

  - L{xtext}: the xtext encoding of DSN parameters (RFC 3461 4) and the
    UTF-8 address forms of RFC 6533 3;
  - L{dsnparams}: the DSN parameters NOTIFY, RET, ENVID and ORCPT (RFC
    3461): checking them, keeping them in an envelope's metadata, reading
    them back;
  - L{idn}: internationalised domain names as IDNA 2008 A-labels;
  - L{smtputf8}: whether a message needs SMTPUTF8 (RFC 6531) to be relayed;
  - L{metadata}: the envelope metadata keys of these extensions.
"""
