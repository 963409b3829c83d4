"""
Outbound transport security (issue 19): MTA-STS, DANE, TLS reporting.
"""
