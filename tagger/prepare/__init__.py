"""Offline preparation (``tagger prepare``): decode a dataset once and write it as a clip
store. This package writes what ``tagger.data`` reads; it imports ``tagger.data`` (the
store's format), never the reverse."""
