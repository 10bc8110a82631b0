"""
Public, verified test helpers: fakes of the interfaces, Hypothesis
strategies, the transport contract suite, an in-memory HTTP client, and
L{client.ServiceClient} for unit-testing a microservice without a gateway.
"""
