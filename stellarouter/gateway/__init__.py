"""
The gateway: an HTTP edge that resolves, routes and dispatches requests to
microservice connections.  L{service.GatewayService} ties together the
twisted.web side (C{edge}, C{planner}, C{response}, C{upload}, C{_web}), the
routing state fed by the connections' HELLOs (C{state}, C{resolver},
C{routing}) and one transport server per configured listener
(C{connection}, C{dispatch}); C{docs/router/architecture.md} draws the map.
"""
