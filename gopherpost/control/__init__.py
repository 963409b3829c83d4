"""
The control socket: how C{gopherpostctl} asks the running server to act.

A UNIX socket in the spool's state directory (C{.gopherpost/control.sock},
mode 0660, in a directory only the server's user and group may enter)
carries JSON lines: one request C{{"command": "queue.flush", "arguments":
{...}}}, one response C{{"ok": true, "result": ...}} or C{{"ok": false,
"error": {"code": "not-found", "message": "..."}}}.

  - L{gopherpost.control.registry}: the commands, registered by the parts
    that own the state they act on (L{IControlCommands});
  - L{gopherpost.control.protocol}: the server's end of one connection;
  - L{gopherpost.control.service}: the listening socket, and the check
    that no other server runs on the same spool;
  - L{gopherpost.control.client}: the blocking client C{gopherpostctl} uses;
  - L{gopherpost.control.commands}: the commands of the server itself
    (status, configuration, reload) and the read-only queue views.
"""
