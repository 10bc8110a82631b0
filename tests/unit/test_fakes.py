"""
Every fake in L{stellarouter.testing} provides the interfaces it declares
(C{verifyObject}), so a test that passes against a fake says something about
the real objects behind the same interface; and no fake added there escapes
this check.
"""

import importlib
import inspect
import pkgutil
from typing import Callable, Dict, List, Tuple, Type

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    IProcessProtocol,
    IPushProducer,
    IReactorTime,
    IReactorUDP,
    ITransport,
    IUDPTransport,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementedBy
from zope.interface.verify import verifyObject

import stellarouter.testing
from stellarouter.common.interfaces import (
    IFrameReceiver,
    IFrameSender,
    IResponseSink,
    ISendBacklog,
)
from stellarouter.gateway.admin import IMetricsExposition
from stellarouter.testing.admin import FakeMetricsExposition
from stellarouter.testing.client import ServiceClient, _Replies
from stellarouter.testing.datagrams import FakeDatagramReactor, FakeUDPPort
from stellarouter.testing.http import HalfCloseTransport
from stellarouter.testing.processes import WatchedProcess
from stellarouter.testing.telemetry import MemoryAccessLogSink
from stellarouter.accesslog import IAccessLogSink
from stellarouter.testing.fakes import (
    FakeBacklogSender,
    FakeFrameSender,
    RecordingReceiver,
    RecordingSink,
)
from stellarouter.microservice.endpoints import Microservice


def _udp_port() -> FakeUDPPort:
    return FakeDatagramReactor().listenUDP(0, DatagramProtocol())


def _replies() -> _Replies:
    return ServiceClient(Microservice("fakes", "1.0.0"))._replies


#: Each fake of stellarouter.testing: how to make one, and the interfaces
#: it is checked against.
FAKES: Dict[type, Tuple[Callable[[], object], List[Type[Interface]]]] = {
    FakeFrameSender: (FakeFrameSender, [IFrameSender]),
    FakeBacklogSender: (FakeBacklogSender, [IFrameSender, ISendBacklog]),
    RecordingReceiver: (RecordingReceiver, [IFrameReceiver]),
    RecordingSink: (RecordingSink, [IResponseSink]),
    _Replies: (_replies, [IFrameSender]),
    FakeDatagramReactor: (FakeDatagramReactor, [IReactorUDP, IReactorTime]),
    FakeUDPPort: (_udp_port, [IListeningPort, IUDPTransport]),
    HalfCloseTransport: (HalfCloseTransport, [ITransport, IConsumer, IPushProducer]),
    WatchedProcess: (lambda: WatchedProcess("fake"), [IProcessProtocol]),
    FakeMetricsExposition: (FakeMetricsExposition, [IMetricsExposition]),
    MemoryAccessLogSink: (MemoryAccessLogSink, [IAccessLogSink]),
}


def _declared_fakes() -> List[type]:
    """
    Every class defined in a module of L{stellarouter.testing} that declares
    an interface (C{@implementer}).
    """
    found = []
    for info in pkgutil.iter_modules(stellarouter.testing.__path__):
        module = importlib.import_module(f"stellarouter.testing.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and list(implementedBy(cls)):
                found.append(cls)
    return found


class FakesProvideTheirInterfacesTests(SynchronousTestCase):
    def test_each_fake_verifies(self) -> None:
        """
        Each fake provides every interface listed for it, methods and
        attributes with the right signatures.
        """
        for cls, (make, interfaces) in FAKES.items():
            fake = make()
            for interface in interfaces:
                with self.subTest(fake=cls.__name__, interface=interface.__name__):
                    self.assertTrue(verifyObject(interface, fake))

    def test_every_declared_fake_is_listed(self) -> None:
        """
        A class in stellarouter.testing that declares an interface is in
        L{FAKES}, with every interface it declares: a new fake cannot skip
        the check above.
        """
        for cls in _declared_fakes():
            with self.subTest(fake=cls.__name__):
                self.assertIn(cls, FAKES, f"{cls.__qualname__} is not verified in FAKES")
                checked = set(FAKES[cls][1])
                for interface in implementedBy(cls).flattened():
                    if interface is Interface:
                        continue
                    if any(interface in c.__iro__ for c in checked):
                        continue
                    self.fail(f"{cls.__qualname__} declares {interface.__name__}, "
                              "not verified in FAKES")

    def test_fake_port_is_stopped(self) -> None:
        """
        The fake UDP port's C{stopListening} unbinds it and fires.
        """
        reactor = FakeDatagramReactor()
        port = reactor.listenUDP(0, DatagramProtocol())
        stopped = port.stopListening()
        self.assertIsInstance(stopped, Deferred)
        self.assertEqual(reactor.ports, {})
