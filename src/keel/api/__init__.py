"""keel.api."""
