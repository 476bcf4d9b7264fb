"""Research scripts: experiments that read finished training runs; not part of the product.

Each is a module run with ``python -m`` from the repository root (they build on ``training``,
so they need the ``train`` extra):

- ``python -m research.error_overlap``: which held-out digits runs miss, shared errors, ensembles;
- ``python -m research.bn_statistics``: clean batch norm statistics on runs trained with distortions;
- ``python -m research.plot_distortions``: the figure of the training-time distortions.
"""
