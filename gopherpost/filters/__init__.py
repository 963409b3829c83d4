"""
Content filtering during the SMTP conversation, by the filters mail
administrators already run: rspamd (its HTTP API), SpamAssassin (spamd)
and any milter (OpenDKIM, clamav-milter, OpenDMARC, rspamd's milter port).

Each filter answers with a L{gopherpost.filters.verdict.Verdict} (accept,
reject, tempfail, discard; header, body and envelope edits; a quarantine
note).  The policies in L{gopherpost.filters.policies} sit on the inbound
chain, ask the filters at the right stages and apply their verdicts to the
message before it is made durable; L{gopherpost.filters.service} builds
them from the settings.

    verdict.py      what a filter decides (the common type)
    headers.py      a header section that edits keep byte-exact
    envelope.py     the message and envelope as filters see and edit them
    failure.py      a filter that is down or too slow: SMTP_FILTER_FAIL
    metrics.py      results, latency and spam scores (prometheus_client)
    milter/         the MTA side of the Sendmail milter protocol, version 6
    rspamd.py       rspamd's /checkv2 over Twisted's HTTP client
    spamd.py        SpamAssassin's spamd (SPAMC/1.5)
    policies.py     the chain's policies (milters at every stage; scanners
                    at the end of data)
    service.py      everything built from the settings
"""
