"""keel.cli."""
