"""
The gateway: an HTTP edge that resolves, routes and dispatches requests to
microservice connections.
"""
