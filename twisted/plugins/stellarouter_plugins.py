"""
twistd plugins of stellarouter: C{stella-gateway} and C{stella-micro}.
Kept thin: the real work is imported only when a plugin is used.
"""

from twisted.application.service import ServiceMaker

stellaGateway = ServiceMaker(
    "stellarouter gateway", "stellarouter.gateway.tap",
    "HTTP gateway routing to microservices over binary transports", "stella-gateway",
)
stellaMicro = ServiceMaker(
    "stellarouter microservice", "stellarouter.microservice.tap",
    "Run a stellarouter microservice app connected to its routers", "stella-micro",
)
