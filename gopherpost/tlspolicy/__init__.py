"""
Outbound transport security (issue 19): which MX hosts mail may go to and
how their TLS is checked (DANE, MTA-STS, C{SMTP_OUTBOUND_TLS}), and TLS
reports.

  - L{interfaces}: the seams the relay's courier uses (L{ITransportSecurity},
    L{IDestinationTLS}, L{IHostTLSPolicy}).
  - L{policy}: the decision per destination and per connection.
  - L{connection}: the STARTTLS connection creators that check certificates.
  - L{certificates}: TLSA records, DANE's checks, host names (pure).
  - L{dane}: validated MX and TLSA lookups.
  - L{sts}: MTA-STS records and policies (pure); L{mtasts}: their discovery;
    L{stscache}: the durable policy cache; L{https}: the verified HTTPS.
  - L{reportstore}: the TLS report statistics; L{report}: the RFC 8460
    report (pure); L{reporter}: sending it daily.
  - L{requiretls}: the outbound REQUIRETLS checks.
  - L{results}: the vocabulary; L{metrics}: the counters.
  - L{service}: all of it as configured.
"""
