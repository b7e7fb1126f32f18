"""Classifier architectures: one small file per family, each registering itself."""
