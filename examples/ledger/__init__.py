"""
The Ledger example microservice: asyncio handlers over PostgreSQL (asyncpg).

Run it behind a gateway (from the repository root; see README.md here)::

    twistd -n stella-gateway --config examples/ledger/gateway.yaml
    twistd -n stella-micro --config examples/ledger/ledger.yaml
"""
