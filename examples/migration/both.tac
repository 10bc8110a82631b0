# The transition: one process serves the old Klein app on :8081 and dials the
# gateway as the "notes" microservice; both call examples/migration/core.py.
#   PYTHONPATH=. .venv/bin/twistd -ny examples/migration/both.tac   (from the repository root)
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site

from examples.migration import legacy, service
from stellarouter.config.microservice import load_microservice_config
from stellarouter.microservice.service import MicroserviceService

application = Application("notes-transition")
StreamServerEndpointService(
    serverFromString(reactor, "tcp:8081:interface=127.0.0.1"),
    Site(legacy.app.resource())).setServiceParent(application)
MicroserviceService(
    service.service, load_microservice_config("examples/migration/notes.yaml"),
    reactor).setServiceParent(application)
