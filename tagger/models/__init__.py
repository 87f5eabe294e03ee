"""Tagging networks: each maps raw sub-clips [N, 1, T] to tag logits [N, num_tags]."""
