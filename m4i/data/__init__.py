"""Datasets: manifests, loaders, splits, vocabularies."""
