"""
Every seam of the design, in one module.  Implementations (fakes included)
are checked with C{zope.interface.verify.verifyObject} in the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:  # annotations only: common/ imports no Twisted at run time
    from twisted.internet.defer import Deferred

    from .models import (
        Frame, RenderedDocument, RoutableConnection, RoutingContext, RoutingDecision,
    )
    from .payloads import ResponseMessage


class IFrameSender(Interface):
    """
    One live connection as the layers above a transport see it: a place to
    send frames to.
    """

    transport_type = Attribute("The L{TransportType} carrying this connection.")
    peer = Attribute("A human-readable description of the remote end (str).")
    peer_identity = Attribute(
        "The verified identity of the peer's TLS certificate: a tuple of names "
        "(subject common name, then DNS alternative names); () without one.")

    def sendFrame(frame: Frame) -> None:
        """
        Queue one frame for the peer.  Never blocks; never raises for a
        closed connection (the frame is dropped; C{connectionClosed} tells).

        @param frame: a L{stellarouter.common.models.Frame}.
        @return: C{None}.
        """

    def close(reason: str) -> None:
        """
        Close the connection after the frames already queued.

        @param reason: why, for the logs (str).
        @return: C{None}.
        """


class IFrameReceiver(Interface):
    """
    The other half of a connection: the gateway's or microservice's logic
    that receives frames.  A transport creates one receiver per connection.
    """

    def connectionOpened(sender: IFrameSender) -> None:
        """
        The connection is ready; frames may now be sent.

        @param sender: the L{IFrameSender} of this connection.
        @return: C{None}.
        """

    def frameReceived(frame: Frame) -> None:
        """
        A complete, well-formed frame arrived.

        @param frame: a L{stellarouter.common.models.Frame}.
        @return: C{None}.
        """

    def connectionClosed(reason: str) -> None:
        """
        The connection is gone.  Called exactly once per opened connection.

        @param reason: why, for the logs (str).
        @return: C{None}.
        """


class ITransportServer(Interface):
    """
    The gateway side of a transport: accepts microservice connections and
    builds one L{IFrameReceiver} per connection.
    """

    transport_type = Attribute("The L{TransportType} this server speaks.")

    def start() -> Deferred[str]:
        """
        Begin accepting connections.

        @return: a Deferred that fires with a description of the bound
            address (str, e.g. C{"tcp:127.0.0.1:5100"}) once listening, or
            fails if the address cannot be bound.
        """

    def stop() -> Deferred[None]:
        """
        Stop accepting connections and close the open ones.

        @return: a Deferred that fires when done.
        """


class ITransportClient(Interface):
    """
    The microservice side of a transport: keeps one connection to one router
    open, reconnecting with backoff, and builds a fresh L{IFrameReceiver}
    for every connection it makes.
    """

    transport_type = Attribute("The L{TransportType} this client speaks.")

    def start() -> None:
        """
        Begin connecting (and reconnecting after every loss).

        @return: C{None}.
        """

    def stop() -> Deferred[None]:
        """
        Stop reconnecting and close the current connection.

        @return: a Deferred that fires when done.
        """


class IGlobalRoutingState(Interface):
    """
    The gateway's view of all live microservice connections: the union of
    their HELLOs.  Nothing is persisted.
    """

    def register(connection: RoutableConnection) -> None:
        """
        Add a connection whose HELLO was accepted.

        @param connection: an object with a C{state} attribute holding a
            L{stellarouter.common.models.ConnectionState}.
        @return: C{None}.
        @raise stellarouter.common.errors.InvalidDescriptor: if one of its
            endpoints is owned by a different service, or clashes with a
            template already registered; nothing is changed then.
        """

    def unregister(connection: RoutableConnection) -> None:
        """
        Remove a connection (closed, or rejected late).  Removing an unknown
        connection is a no-op.

        @return: C{None}.
        """

    def resolve(method: str, path: str) -> object:
        """
        Find the endpoint for a request.

        @param method: the HTTP method (str, upper case).
        @param path: the request path (str, percent-encoded, no query).
        @return: a resolution with C{service_name}, C{template} and
            C{path_params}.
        @raise stellarouter.gateway.errors.NotFound: no template matches.
        @raise stellarouter.gateway.errors.MethodNotAllowed: the path
            matches but not for C{method}; it carries the allowed methods.
        @raise stellarouter.gateway.errors.NoRoute: no live instance serves
            a matching route, but one did recently or the configuration
            names it (503).
        @raise stellarouter.gateway.errors.BadRequest: the path has a
            segment no handler may get (NUL, an encoded C{/}, a dot
            segment as a parameter).
        """

    def connectionsFor(service_name: str, method: str,
                       template: str) -> Sequence[RoutableConnection]:
        """
        The live connections of C{service_name} that announced the endpoint.

        @return: a sequence of connections (possibly empty).
        """

    def connections() -> Sequence[RoutableConnection]:
        """
        Every registered connection.

        @return: a sequence of connections.
        """


class IRoutingPlugin(Interface):
    """
    Chooses the connection that serves one request.  Pure policy: no I/O.
    """

    def choose(context: RoutingContext, candidates: Sequence[RoutableConnection],
               now: float) -> Optional[RoutingDecision]:
        """
        Pick a connection.

        @param context: the L{stellarouter.common.models.RoutingContext}.
        @param candidates: the connections serving the endpoint.
        @param now: the current time (seconds) from the injected clock.
        @return: a L{stellarouter.common.models.RoutingDecision}, or
            C{None} if no candidate is routable.
        @raise stellarouter.gateway.errors.VersionNotFound: a requested
            version that no candidate has.
        """


class IRawStellaEndpoint(Interface):
    """
    A class-based microservice endpoint.
    """

    descriptor = Attribute(
        "The L{stellarouter.common.models.EndpointDescriptor} it serves "
        "(service name and version may be empty; the service fills them)."
    )

    def handle(context: Any) -> object:
        """
        Serve one request.

        @param context: a
            L{stellarouter.microservice.context.RawRequestContext}.
        @return: a L{stellarouter.microservice.context.RawResponse}, a
            Deferred or a coroutine resolving to one.
        """


class IResponseSink(Interface):
    """
    Where the gateway's dispatcher delivers one request's outcome (the HTTP
    edge implements it per request).  Exactly one of C{responseStarted} or
    C{failed} is called first; after C{responseStarted} with a streaming
    response come C{bodyChunk} calls and one C{responseFinished} or
    C{failed}.
    """

    def responseStarted(response: ResponseMessage) -> None:
        """
        The RESPONSE header (and, unless streaming, the whole body) arrived.

        @param response: a L{stellarouter.common.payloads.ResponseMessage}.
        @return: C{None}.
        """

    def bodyChunk(data: bytes) -> None:
        """
        One piece of a streamed response body.

        @param data: bytes.
        @return: C{None}.
        """

    def responseFinished() -> None:
        """
        The streamed response body is complete.

        @return: C{None}.
        """

    def failed(error: Any) -> None:
        """
        No (complete) response will come.

        @param error: a L{stellarouter.gateway.errors.DispatchError} saying
            why (timeout, connection lost, shutdown, aborted stream).
        @return: C{None}.
        """


class ISendBacklog(Interface):
    """
    A sender whose frames may wait in this process before they leave it (a
    stream transport's write buffer), and that tells how many do.
    """

    unsent = Attribute(
        "Bytes of frames written while the transport's write buffer was over "
        "its high-water mark and not sent since (int; 0 once the buffer "
        "drained).  An upper bound of what waits, give or take the "
        "transport's own high-water mark.")

    def notifyDrained(callback: Callable[[], None]) -> None:
        """
        Call C{callback()} once, when nothing waits any more (at once if
        nothing waits now); dropped if the connection closes first.

        @param callback: a callable without arguments.
        @return: C{None}.
        """

    def limitUnsent(limit: int, callback: Callable[[], None]) -> None:
        """
        Call C{callback()} when C{unsent} passes C{limit} (once each time it
        passes after having drained).  Replaces an earlier limit.

        @param limit: bytes (int).
        @param callback: a callable without arguments.
        @return: C{None}.
        """

    def abort(reason: str) -> None:
        """
        Close now, dropping whatever waits (L{IFrameSender.close} waits for
        the queued frames to leave, which a peer that does not read never
        lets happen).

        @param reason: why, for the logs (str).
        @return: C{None}.
        """


class IOpenApiSource(Interface):
    """
    The OpenAPI documents of what is connected to a gateway, as the routes
    of C{stellarouter.gateway.openapi.routes.add_openapi_routes} serve them (on
    the public site or the admin listener).
    """

    title = Attribute("The documents' C{info.title} (str), also the docs page's title.")

    def versions() -> List[str]:
        """
        @return: every version some connected service has, lowest first
            (list of str): the docs page offers a document for each.
        """

    def document(version: Optional[str]) -> Optional[RenderedDocument]:
        """
        The serialized document for requests with C{X-Stella-Version:
        version}, or without one.

        @param version: a version (str), or C{None} for the default versions.
        @return: the document (C{body}: UTF-8 JSON; C{etag}: a quoted strong
            entity tag), or C{None} when no connected service has C{version}.
        """
