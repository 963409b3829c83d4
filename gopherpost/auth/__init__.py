"""
Authenticated submission (RFC 4954 AUTH, RFC 6409 submission), one job per
module:

  - L{users}: the users file (format, parser that keeps comments, atomic
    rewrite); L{passwords}: its scrypt hashes; L{senders}: the addresses a
    user may send as;
  - L{directory}: the users a running server knows, re-read when the file
    changes;
  - L{checker}: the twisted.cred checker, realm and avatar, and the thread
    pool the scrypt checks run in;
  - L{sasl}: the PLAIN and LOGIN exchanges, without I/O;
  - L{command}: the AUTH command of one session (replies, delays, the
    per-session limit); L{lockout}: lockouts per client network and per
    user in the checks' state store; L{metrics}: the counter;
    L{replies}: the reply type;
  - L{policies}: AUTH required before MAIL, sender rights, the header From;
  - L{service}: all of it built from the settings, for the wiring;
  - L{usercommands}: C{gopherpostctl user};
  - L{interfaces}: the seams.
"""
