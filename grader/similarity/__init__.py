"""Pairwise code similarity of a class and its side-by-side pages."""
