"""
The shared vocabulary of the gateway and the microservice SDK: enums, the
immutable data model, zope interfaces, the sans-IO frame codec and the payload
encodings.  Nothing here imports C{twisted.internet}.
"""
