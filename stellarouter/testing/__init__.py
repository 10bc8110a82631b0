"""
Public, verified test helpers: fakes of the interfaces, Hypothesis
strategies, the transport contract suite, an in-memory HTTP client.
"""
