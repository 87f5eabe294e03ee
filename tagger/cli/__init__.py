"""Command-line entry points (train, eval, the ``tagger`` command)."""
