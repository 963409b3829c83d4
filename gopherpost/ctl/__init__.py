"""
C{gopherpostctl}: see, steer and check a GopherPost server.

Commands come in groups, each in a module of its own, listed in
L{gopherpost.ctl.registry.GROUPS} (C{queue}, C{config}, C{status}; later
C{user}, C{webhook}, C{tls}).  Listings take C{--json}.

Exit status:
  - 0: done;
  - 1: failed (no such message, an invalid configuration, the server
    refused);
  - 2: wrong usage;
  - 3: the server is not running (for what only the running server can
    do).
"""
