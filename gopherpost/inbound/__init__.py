"""
The receiving side: an ESMTP server protocol (L{gopherpost.inbound.protocol}),
its factory with connection limits (L{gopherpost.inbound.factory}), the
allow-list portal (L{gopherpost.inbound.access}) and the delivery policy
that turns accepted transactions into spooled messages
(L{gopherpost.inbound.delivery}).
"""
