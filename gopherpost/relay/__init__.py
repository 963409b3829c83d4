"""
Outbound delivery: MX resolution, the SMTP client, the queue and bounces.
"""
