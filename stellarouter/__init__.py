"""
stellarouter: an HTTP gateway that routes requests to microservices which
dial in over binary transports.

Layers point one way: L{stellarouter.common} (model, frames, interfaces) is
imported by L{stellarouter.transports}, which is imported by
L{stellarouter.gateway} and L{stellarouter.microservice}.
"""

__version__ = "0.1.0"
