#!/usr/bin/env python3
"""
The cost of one routing decision for GET /ping (one HEALTHY instance) with N
UNHEALTHY registrations of the same endpoint (issue 18, item 4): in-process,
no sockets.

    .venv/bin/python benchmarks/unhealthy_candidates.py 1000
"""
import sys, timeit
from twisted.internet.task import Clock
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.gateway.routing import RegionAwareRouting
from stellarouter.common.models import RoutingContext
from stellarouter.testing.fakes import FakeFrameSender
from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor
from stellarouter.common.payloads import Hello, encode_hello
def hello(paths, instance_id):
    i = InstanceDescriptor(instance_id, "billing", "1.0.0", "eu1")
    return Frame(FrameType.HELLO, new_correlation_id(), encode_hello(Hello(i, tuple(EndpointDescriptor("billing", "1.0.0", m, p) for m, p in paths))))
clock, state = Clock(), RoutingState()
def connect(i):
    c = GatewayConnection(Registrar(state, "gw", "eu1"), clock); c.connectionOpened(FakeFrameSender()); c.frameReceived(hello([("GET", "/ping")], f"s-{i}")); return c
silent = [connect(i) for i in range(int(sys.argv[1]))]
clock.advance(25); live = connect("live"); clock.advance(5)
for c in silent + [live]: c.refresh_status(clock.seconds())
routing = RegionAwareRouting("eu1")
ctx = RoutingContext("GET", "/ping", {}, ("GET", "/ping"), "billing", {}, None, "eu1", None, 0)
def route():
    return routing.choose(ctx, state.connectionsFor("billing", "GET", "/ping"), 0.0)
assert route().connection is live
n = 20000
print(f"{sys.argv[1]} UNHEALTHY: {timeit.timeit(route, number=n) / n * 1e6:.1f} us per routing decision, candidates {len(state.connectionsFor('billing','GET','/ping'))}")
