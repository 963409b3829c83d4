"""
Real content filters from Debian (rspamd, spamd, clamd with clamav-milter,
OpenDKIM) started on loopback ports for the integration tests: see
L{tests.filters.services} and C{services.sh} (what C{.ci/run} calls to
install them).
"""
