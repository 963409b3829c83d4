"""
Live reload (SIGHUP, C{gopherpostctl config reload}): the configuration is
read and validated again, every part that can prepares the new one, and
only if all of them could is it applied, each part to what it starts from
then on (new sessions, new delivery attempts).

  - L{gopherpost.reload.interfaces}: L{IReconfigurable}, what a part offers;
  - L{gopherpost.reload.reloader}: the L{Reloader} that runs a reload, logs
    one line and counts C{smtp_config_reloads_total};
  - L{gopherpost.reload.changes}: which variables changed (files included);
  - L{gopherpost.reload.parts}: the server's reloadable parts and the field
    each part reads;
  - L{gopherpost.reload.switch}: a listener's factory, swapped for new
    sessions;
  - L{gopherpost.reload.signals}: SIGHUP, and a second SIGTERM/SIGINT.
"""
