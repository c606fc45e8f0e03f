"""Flower (flwr) integration: Flower Apps and local deployment helpers for medfed."""
