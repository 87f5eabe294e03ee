"""Data sources: every one is a ``ClipDataModule`` yielding [batch, n_subclips, 1, subclip_len]."""
