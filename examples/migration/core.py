"""
The business logic of a small "notes" service, written once and shared by
the old Klein app and the new microservice during a migration.
"""

from __future__ import annotations

import itertools
from typing import Dict, Optional

_ids = itertools.count(1)
NOTES: Dict[str, str] = {}


def add_note(text: str) -> str:
    """
    Store a note; its id.
    """
    note_id = str(next(_ids))
    NOTES[note_id] = text
    return note_id


def get_note(note_id: str) -> Optional[str]:
    """
    A note's text, or C{None}.
    """
    return NOTES.get(note_id)
