# -*- test-case-name: tests.test_index_service -*-
"""
The message index: what the web UI and the Mailpit-compatible API search
and list.

    mime        a message's addresses, subject, bodies, parts (email package)
    records     one message as the index keeps it (envelope + bytes)
    query       Mailpit's search syntax -> SQL
    database    the SQLite/FTS5 database (blocking)
    indexer     keeping the database in step with the spool (blocking)
    loop        the indexer's schedule (batches, catch-up, rebuild)
    protocol    AMP between the server and the index worker process
    worker      the index worker process (python -m gopherpost.index.worker)
    service     the spool observer and the reader/writer threads
    mailbox     what the API does: pages, messages, deletion, events
    removal     removing a message from the spool, durably
    retention   which messages to prune (capture mode: the newest N)
"""
