"""
Outbound delivery: the queue (schedule, retries, bounces) hands the mail due
for a destination to the courier (MX walk), which runs the SMTP client (one
session per connection) and reports each recipient's outcome.
"""
