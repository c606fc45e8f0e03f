"""nnU-Net v2 in medfed (optional extra ``medfed[nnunet]``).

- :mod:`.export`: sites in nnU-Net's raw format (hashed ids, BraTS regions as nested labels);
- :mod:`.fingerprint`: each site's fingerprint statistics and their exact / histogram merge;
- :mod:`.planning`: nnU-Net's planner on the merged fingerprint (one plans file for the federation);
- :mod:`.network`: nnU-Net's network and deep-supervised region loss for ``SegmentationTask``;
- :mod:`.commands`: ``medfed nnunet export | plan | import-predictions``.

Nothing here is imported by medfed's core; nnunetv2 is imported only when these modules are used.
"""
