"""
GopherPost's listeners: endpoint strings (L{gopherpost.listeners.endpoints}),
the sockets they become (L{gopherpost.listeners.sockets}), the PROXY protocol
in front of them (L{gopherpost.listeners.proxy}), implicit TLS
(L{gopherpost.listeners.implicittls}) and the services that bind them
(L{gopherpost.listeners.service}).

L{gopherpost.config} imports L{gopherpost.listeners.endpoints}: keep this
package's own module free of imports.
"""
