"""The vision side: a frozen encoder (``encoder``), precomputed features on disk (``store``,
filled by ``embed``), and image->caption retrieval to judge a CLIP (``retrieval``).

Kept import-light (no torch here): the CLI imports ``mmphi.vision.config`` to build ``--help``.
"""
