"""medfed: benchmarking federated learning on medical imaging.

Public entry points::

    from medfed.sites import load_federation
    fed = load_federation("data/demo/sites/brain_mri.yaml")
    for site in fed:
        train = site.dataset("train")
"""

__version__ = "0.1.0"
