"""
The receiving side, one job per module, data flowing down the list:

  - L{framing}: bytes to command lines and message content (no I/O);
  - L{session}: the SMTP state machine, replies as values (L{replies});
    paths (L{address}), MAIL/RCPT parameters (L{parameters}), what a
    session knows (L{context}), how long a client may take (L{timeouts});
  - L{protocol}: the thin Twisted protocol (flow control, timeouts, TLS),
    with its one reply writer (L{output});
  - L{policy}: the policy chain; L{policies}: today's checks on it, and the
    chain of each listener role (L{roles}); L{access}: the allow-list portal;
  - L{delivery}: the sink into the spool, through L{message};
  - L{factory}: the factory of one role, connection limits, draining;
  - L{interfaces}: the seams (policies, messages, the sink).

L{workers}, L{worker} and L{ipc} run inbound worker processes.
"""
