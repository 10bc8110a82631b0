"""
A realistic Klein "notes" API, written for Klein alone: query arguments, a
form post, C{getHeader}, cookies, a redirect, C{request.write} streaming
with C{NOT_DONE_YET} and C{notifyFinish}, a Deferred, C{handle_errors}, a
C{<path:...>} route and a C{branch=True} one.  It runs unchanged directly
(C{twistd -n web --class=...}, or a L{Site}) and behind the gateway through
C{service.mount_klein(notes.app)} (C{bridged.py}).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Element, Tag, XMLString, renderer


class NoSuchNote(Exception):
    """
    A note id that is not in the store.
    """


class NotesAPI:
    """
    The notes API; C{clock} runs the slow summary and the export's pacing.
    """

    app = Klein()

    def __init__(self, clock: Optional[IReactorTime] = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.notes: Dict[int, Dict[str, str]] = {}
        self.next_id = 1
        #: Why the streams whose client went away stopped (their
        #: notifyFinish failed with it).
        self.stopped: List[BaseException] = []
        #: The timers of the streams being written.
        self.pending: Dict[str, Any] = {}

    def _json(self, request: Any, obj: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(obj, sort_keys=True).encode()

    @app.handle_errors(NoSuchNote)
    def no_such_note(self, request: Any, failure: Any) -> bytes:
        return self._json(request, {"error": f"no note {failure.value}"}, 404)

    @app.handle_errors(ValueError)
    def bad_input(self, request: Any, failure: Any) -> bytes:
        return self._json(request, {"error": str(failure.value)}, 400)

    @app.route("/notes", methods=["GET"])
    def index(self, request: Any) -> bytes:
        tag = request.args.get(b"tag", [b""])[0].decode()
        limit = int(request.args.get(b"limit", [b"50"])[0])
        found = [dict(n, id=i) for i, n in sorted(self.notes.items())
                 if not tag or n["tag"] == tag]
        request.setHeader(b"X-Total-Count", str(len(found)).encode())
        return self._json(request, found[:limit])

    @app.route("/notes", methods=["POST"])
    def create(self, request: Any) -> bytes:
        text = request.args.get(b"text", [b""])[0].decode("utf-8")
        if not text:
            raise ValueError("a note needs text")
        note_id, self.next_id = self.next_id, self.next_id + 1
        self.notes[note_id] = {"text": text,
                               "tag": request.args.get(b"tag", [b"misc"])[0].decode()}
        request.addCookie(b"last_note", str(note_id).encode(), path=b"/", httpOnly=True)
        request.setHeader(b"Location", str(request.URLPath().child(b"%d" % note_id)).encode())
        return self._json(request, {"id": note_id}, 201)

    def _note(self, note_id: int) -> Dict[str, str]:
        note = self.notes.get(note_id)
        if note is None:
            raise NoSuchNote(note_id)
        return note

    @app.route("/notes/<int:note_id>", methods=["GET"])
    def show(self, request: Any, note_id: int) -> bytes:
        return self._json(request, dict(self._note(note_id), id=note_id))

    @app.route("/notes/<int:note_id>", methods=["DELETE"])
    def delete(self, request: Any, note_id: int) -> bytes:
        if request.getHeader(b"X-Confirm") != b"yes":
            return self._json(request, {"error": "send X-Confirm: yes"}, 409)
        self._note(note_id)
        del self.notes[note_id]
        request.setResponseCode(204)
        return b""

    @app.route("/notes/<int:note_id>/summary")
    def summary(self, request: Any, note_id: int) -> Any:
        text = self._note(note_id)["text"]
        # A slow computation: a Deferred, as a database call would be.
        return deferLater(self.clock, 0.5, self._json, request, {"summary": text[:20]})

    @app.route("/last")
    def last(self, request: Any) -> bytes:
        note_id = request.getCookie(b"last_note")
        if note_id is None:
            raise NoSuchNote("(no last_note cookie)")
        return request.redirect(b"/notes/" + note_id) or b""

    @app.route("/export")
    def export(self, request: Any) -> Resource:
        # A plain twisted.web resource: render_GET streams with NOT_DONE_YET.
        return _Export(self)

    @app.route("/feed")
    def feed(self, request: Any) -> Deferred:
        """
        C{count} ticks, one every C{interval} seconds, written as they come;
        the Deferred fires when the last is written.
        """
        count = int(request.args.get(b"count", [b"3"])[0])
        interval = float(request.args.get(b"interval", [b"0.1"])[0])
        request.setHeader(b"Content-Type", b"text/event-stream")
        done: Deferred = Deferred()
        request.notifyFinish().addErrback(self._stopped)

        def tick(left: int) -> None:
            if left == 0:
                done.callback(b"")
                return
            request.write(b"data: tick %d\n\n" % (count - left))
            self.pending["feed"] = self.clock.callLater(interval, tick, left - 1)

        tick(count)
        return done

    def _stopped(self, failure: Any) -> None:
        self.stopped.append(failure.value)
        for call in self.pending.values():
            if call.active():
                call.cancel()

    @app.route("/notes/<int:note_id>/page")
    def page(self, request: Any, note_id: int) -> Any:
        return _NotePage(note_id, self._note(note_id))

    @app.route("/stats")
    def stats(self, request: Any) -> bytes:
        return self._json(request, {"notes": len(self.notes),
                                    "streams_stopped": [str(e) for e in self.stopped]})

    @app.route("/files/<path:name>")
    def files(self, request: Any, name: str) -> bytes:
        return self._json(request, {"name": name})

    @app.route("/whoami")
    def whoami(self, request: Any) -> bytes:
        return self._json(request, {"client": request.getClientAddress().host,
                                    "secure": request.isSecure(),
                                    "url": str(request.URLPath()),
                                    "agent": (request.getHeader(b"User-Agent") or b"").decode()})

    @app.route("/docs/", branch=True)
    def docs(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"docs: /" + b"/".join(request.postpath)


class _Export(Resource):
    """
    Every note as a line of JSON, one every C{interval} seconds, then
    C{count} ticks: C{request.write} and C{NOT_DONE_YET}, stopped by
    C{notifyFinish} when the client goes away.
    """

    isLeaf = True

    def __init__(self, api: NotesAPI) -> None:
        super().__init__()
        self.api = api

    def render_GET(self, request: Any) -> Any:
        count = int(request.args.get(b"count", [b"3"])[0])
        interval = float(request.args.get(b"interval", [b"0.1"])[0])
        request.setHeader(b"Content-Type", b"application/x-ndjson")
        rows: List[bytes] = [json.dumps(dict(n, id=i), sort_keys=True).encode() + b"\n"
                             for i, n in sorted(self.api.notes.items())]
        rows += [b'{"tick": %d}\n' % i for i in range(count)]

        def next_row() -> None:
            if not rows:
                request.finish()
                return
            request.write(rows.pop(0))
            self.api.pending["export"] = self.api.clock.callLater(interval, next_row)

        request.notifyFinish().addErrback(self.api._stopped)
        next_row()
        return NOT_DONE_YET


class _NotePage(Element):
    """
    A note as an HTML page (a twisted.web template).
    """

    loader = XMLString(
        '<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1">'
        '<body t:render="note"><h1>Note <t:slot name="id"/></h1><p><t:slot name="text"/></p>'
        '</body></html>')

    def __init__(self, note_id: int, note: Dict[str, str]) -> None:
        super().__init__()
        self.note_id = note_id
        self.data = note

    @renderer
    def note(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(id=str(self.note_id), text=self.data["text"])
