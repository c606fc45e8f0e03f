"""Tiny echo Flower App used by the LocalCluster tests."""
