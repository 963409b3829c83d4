# -*- test-case-name: tests.test_webhook_service -*-
"""
Webhooks: inbound mail and delivery events posted as signed JSON, durably
and at least once.

The parts, each a module of its own:

  - L{signing}: Standard Webhooks signatures;
  - L{payload}: a spooled message as the inbound JSON document; a delivery
    event as the events one;
  - L{records}: what is pending and what is settled, on disk in the spool's
    state directory;
  - L{http}: one POST (Twisted's Agent), no redirects, bounded in time;
  - L{dispatcher}: the schedule: concurrency, retries, lifetime, log lines;
  - L{courier}: the dispatcher with its start-up recovery and housekeeping,
    as one service; L{process}: the child process it runs in, and
    L{channel}: what that process and the server tell each other;
  - L{events}: the delivery observer the relay queue tells of events;
  - L{metrics}: the numbers, as a C{prometheus_client} collector;
  - L{service}: the server's side: a spool observer and a delivery
    observer, operations (list, retry, drop) and metrics
    (L{makeWebhookService}).

This module imports nothing itself, so that L{gopherpost.config} can use
L{signing} cheaply.
"""
