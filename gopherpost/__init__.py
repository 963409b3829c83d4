"""
GopherPost: a small, durable SMTP server built on Twisted.

Run it with C{twistd -n gopherpost}; it is configured by C{SMTP_*} environment
variables (see L{gopherpost.config}).
"""

__version__ = "0.5.0"
__all__ = ["__version__"]
