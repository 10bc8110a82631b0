"""
The same routes as a stellarouter microservice, calling the same core.
Run it next to the Klein app during the transition (see
docs/router/migration.md), or alone once clients go through the gateway.
"""

from __future__ import annotations

from stellarouter.microservice import Microservice, RawRequestContext, RawResponse

from . import core

service = Microservice("notes", "1.0.0")


@service.endpoint("POST", "/notes")
def create(ctx: RawRequestContext) -> RawResponse:
    return RawResponse.json({"id": core.add_note(ctx.body.decode("utf-8", "replace"))}, status=201)


@service.endpoint("GET", "/notes/{note_id}")
def show(ctx: RawRequestContext) -> RawResponse:
    note_id = ctx.path_params["note_id"]
    text = core.get_note(note_id)
    if text is None:
        return RawResponse.json({"error": "no such note"}, status=404)
    return RawResponse.json({"id": note_id, "text": text})
