"""
The existing web service: a Klein app that serves clients over HTTP itself.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein

from . import core

app = Klein()


@app.route("/notes", methods=["POST"])
def create(request: Any) -> bytes:
    note_id = core.add_note(request.content.read().decode("utf-8", "replace"))
    request.setResponseCode(201)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({"id": note_id}).encode()


@app.route("/notes/<note_id>", methods=["GET"])
def show(request: Any, note_id: str) -> bytes:
    text = core.get_note(note_id)
    request.setHeader(b"Content-Type", b"application/json")
    if text is None:
        request.setResponseCode(404)
        return json.dumps({"error": "no such note"}).encode()
    return json.dumps({"id": note_id, "text": text}).encode()
