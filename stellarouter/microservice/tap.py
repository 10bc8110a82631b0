"""
C{twistd stella-micro}: the command line (a configuration file naming the
app as C{module:attribute}, both loaded and checked before twistd starts
anything, the endpoint overrides merged into the app's descriptors) and
L{makeService}, which builds the L{MicroserviceService} on the global
reactor and makes the process exit with the SDK's status when it gives up.
This is the only SDK module that touches the global reactor.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import importlib
import os
import sys
from typing import Optional

from twisted.application.service import IService
from twisted.python import usage

from ..config import ConfigError, load_microservice_config
from ..config.microservice import check_app_reference
from ..lifecycle import StartupError, one_line, refuse_to_start
from .asyncio_bridge import use_asyncio_reactor
from .endpoints import Microservice, merge_overrides


def load_app(reference: str) -> Microservice:
    """
    Import C{module:attribute} and check it is a L{Microservice}.  The
    current directory is importable, as with C{python -m}.

    @raise usage.UsageError: a bad reference, an import error, or not a
        L{Microservice}.
    """
    problem = check_app_reference(reference)
    if problem is not None:
        raise usage.UsageError(f"--app: {problem}")
    module_name, attribute = reference.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise usage.UsageError(f"cannot import {module_name!r} for --app {reference}: "
                               f"{type(e).__name__}: {e}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, Microservice):
        raise usage.UsageError(
            f"{reference} is {type(app).__name__}, not a stellarouter Microservice")
    return app


class Options(usage.Options):
    """
    Command line of C{twistd stella-micro}.
    """

    synopsis = "--config service.yaml [--app module:attribute]"
    longdesc = (
        "Run a stellarouter microservice: it dials every configured router, "
        "announces its endpoints and serves the requests routed to it."
    )
    optParameters = [
        ["config", "c", None, "Path of the microservice YAML configuration (required)."],
        ["app", "a", None, "The Microservice object, as module:attribute "
                           "(default: 'app' in the configuration)."],
        ["grace", "g", None, "Seconds requests in flight may take to finish when "
                             "stopping (default: drain_grace_period, 30)."],
    ]

    def postOptions(self) -> None:
        """
        Load the configuration and the app now.

        @raise usage.UsageError: with a message saying what is missing.
        """
        path: Optional[str] = self["config"]
        if not path:
            raise usage.UsageError(
                "--config is required: the path of the microservice YAML file, "
                "which names at least one router to connect to "
                "(e.g. --config examples/billing/billing.yaml)"
            )
        try:
            config = load_microservice_config(path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        reference = self["app"] or config.app
        if not reference:
            raise usage.UsageError(
                f"no app to run: pass --app module:attribute or set 'app' in {path}")
        if self["grace"] is not None:
            try:
                grace = float(self["grace"])
            except ValueError:
                grace = -1.0
            if not grace >= 0:
                raise usage.UsageError(f"--grace: {self['grace']!r} is not a number of seconds >= 0")
            config = dataclasses.replace(config, drain_grace_period=grace)
        if config.reactor == "asyncio":
            # Before the app is imported: its modules may import the reactor.
            problem = use_asyncio_reactor()
            if problem is not None:
                raise usage.UsageError(f"{path}: reactor: asyncio {problem}")
        self["micro_config"] = config
        self["micro_app"] = app = load_app(reference)
        try:
            merge_overrides(app.descriptors(), config.endpoints, path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """
    Build the microservice service from validated options.  The only place
    that touches the global reactor.
    """
    from twisted.internet import reactor

    from .service import MicroserviceService

    def started() -> None:
        # The app and the SDK are loaded: what is alive now lives for the
        # whole process; keep it out of the cyclic GC's generations
        # (shorter GC pauses), as twistd stella-gateway does.
        gc.collect()
        gc.freeze()

    def give_up(status: int) -> None:
        # twistd has no exit status of its own: once it has stopped the
        # reactor and cleaned up (pid file, logs), leave with ours.
        atexit.register(_exit_with, status)
        if reactor.running:
            reactor.stop()

    try:
        service = MicroserviceService(options["micro_app"], options["micro_config"], reactor,
                                      give_up=give_up)
    except StartupError as e:
        # A router that cannot be set up (a certificate that does not load,
        # an address the transport refuses): one line, status 1.  Anything
        # else is a bug: twistd prints its traceback.
        refuse_to_start("stella-micro", one_line(e))
    reactor.callWhenRunning(started)
    return service


def _exit_with(status: int) -> None:
    """
    End the process with C{status} (at interpreter exit, after twistd).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
