"""Corpora: the embedded synthetic corpus, real-corpus importers, manifests and loading."""
