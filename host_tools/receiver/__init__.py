"""The acquirer's receiver: terminals upload their stored payments over mutual
TLS, the receiver re-verifies and stores each one exactly once, flags double
spending, and answers with a signed update bundle (docs/upload.md).

    config.py   the acquirer's config file: issuers, deny list, risk, keys
    wire.py     the exchange's bytes: request body, response, update bundle
    checks.py   one payment's independent re-verification (`cryptography`)
    storage.py  SQLite / PostgreSQL: idempotent storage, double-spend constraint
    app.py      the ASGI app (FastAPI), terminal identity from the client cert
    server.py   uvicorn over TLS, with the ASGI TLS extension
    cli.py      offpay receiver | ledger | revoke | terminals
    testing.py  start_receiver / start_postgres for tests, the bench and the demo
"""


def __getattr__(name):
    # `from host_tools.receiver import start_receiver` without importing the
    # web stack, which the helpers do not need (they start a process).
    if name in ("start_receiver", "start_postgres", "ReceiverProcess"):
        from host_tools.receiver import testing
        return getattr(testing, name)
    raise AttributeError(name)
