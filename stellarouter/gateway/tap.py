"""
C{twistd stella-gateway}: the command line (one C{--config} file, loaded and
validated before twistd starts anything) and L{makeService}, which builds
the L{GatewayService} on the global reactor, reloads the configuration on
SIGHUP and turns a failed start-up into one log line and exit status 1.
This is the only gateway module that touches the global reactor.
"""

from __future__ import annotations

import gc
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Optional, cast

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.python import usage
from twisted.python.failure import Failure

from ..config import ConfigError, load_gateway_config
from ..lifecycle import StartAbandoned, StartupError, fail_startup, one_line, refuse_to_start

if TYPE_CHECKING:
    from .service import ListenAddresses


class Options(usage.Options):
    """
    Command line of C{twistd stella-gateway}.
    """

    synopsis = "--config router.yaml"
    longdesc = (
        "Run the stellarouter gateway: an HTTP edge that routes requests to "
        "microservices connected over binary transports."
    )
    optParameters = [
        ["config", "c", None, "Path of the gateway YAML configuration (required)."],
    ]

    def postOptions(self) -> None:
        """
        Load and validate the configuration now, so a bad file stops
        C{twistd} with every problem listed.

        @raise usage.UsageError: no C{--config}, or an unusable file.
        """
        path: Optional[str] = self["config"]
        if not path:
            raise usage.UsageError(
                "--config is required: the path of the gateway YAML file "
                "(e.g. --config examples/billing/gateway.yaml)"
            )
        try:
            self["gateway_config"] = load_gateway_config(path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """
    Build the gateway service from validated options.  The only place that
    touches the global reactor.
    """
    from twisted.internet import reactor

    from .service import GatewayService

    try:
        service = GatewayService(options["gateway_config"], reactor,
                                 config_path=os.path.abspath(options["config"]))
    except StartupError as e:
        refuse_to_start("stella-gateway", one_line(e))

    def on_sighup(signum: int, frame: Optional[FrameType]) -> None:
        # A signal handler may run at any point: hand the work to the reactor.
        cast(IReactorFromThreads, reactor).callFromThread(service.reload)

    reactor.callWhenRunning(signal.signal, signal.SIGHUP, on_sighup)

    def started(addresses: ListenAddresses) -> None:
        # Objects alive after start-up live for the whole process: keep
        # them out of the cyclic GC's generations (shorter GC pauses).
        gc.collect()
        gc.freeze()

    def failed(failure: Failure) -> None:
        if failure.check(StartAbandoned):
            return  # (stopped during start-up: the process is ending anyway)
        # One line naming the listener (StartupError), or the error.
        error = cast(BaseException, failure.value)
        reason = str(error) if failure.check(StartupError) else one_line(error)
        fail_startup(cast(IReactorCore, reactor), "stella-gateway", reason)

    service.ready.addCallbacks(started, failed)
    return service
