"""notes: a small service built on keel, as a team would write one.

Its own table (with a foreign key to keel's users) and migration, its own
routes with object-level authorization, its own audit actions in keel's
chain, and a role of its own that grants a moderation scope. ``notes.app:create``
is the factory ``keel serve --factory`` runs.
"""
