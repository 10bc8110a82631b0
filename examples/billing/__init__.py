"""
The Billing example microservice.

Run it behind a gateway (from the repository root)::

    twistd -n stella-gateway --config examples/billing/gateway.yaml
    twistd -n stella-micro --config examples/billing/billing.yaml
"""

from .service import service

__all__ = ["service"]
