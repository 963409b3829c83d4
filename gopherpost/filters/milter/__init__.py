"""
The MTA side of the Sendmail milter protocol, version 6, written from the
protocol's description (Sendmail's libmilter documentation and mfdef.h).

    codec.py          packets as bytes and replies as values (no I/O)
    protocol.py       one connection: a command, its reply, as Deferreds
    conversation.py   one SMTP session's stages as milter commands; the
                      replies as verdicts
    macros.py         the macros milters rely on, at each stage
    client.py         connect and negotiate, within the milter's timeout
"""
