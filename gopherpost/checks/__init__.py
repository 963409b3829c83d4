# -*- test-case-name: tests.test_checks_policies -*-
"""
The checks of an internet MX (issue 16): who a message really comes from
(SPF, DKIM, ARC, DMARC and the C{Authentication-Results} header) and keeping
abuse out (DNSBL, rate limits, greylisting, bans), with their state in a
local store or shared in Redis.

Each check is a module with a narrow, Deferred-returning API;
L{gopherpost.checks.policies} turns them into the policies of the inbound
chain, and L{gopherpost.checks.service} builds them from the settings.
"""
