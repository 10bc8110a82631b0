"""
The notes Klein app behind the gateway, unchanged: the whole migration is
these three lines and C{bridged.yaml} (docs/router/migration.md).

    twistd -n stella-micro --config examples/migration/bridged.yaml
"""

from examples.migration.notes_app import NotesAPI
from stellarouter.microservice import Microservice

service = Microservice("notes", "2.0.0")
service.mount_klein(NotesAPI().app)
