"""Federated training: strategies, the in-process runner, the run ledger, experiments, sweeps and seeds.

Modules are imported by their own names (``medfed.fl.experiment``, ``medfed.fl.strategies``, ...); this package
imports nothing, so ``import medfed.fl.config`` stays light.
"""
