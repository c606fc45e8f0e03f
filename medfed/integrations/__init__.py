"""Integrations of medfed with external federated-learning frameworks."""
