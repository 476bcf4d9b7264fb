"""Research scripts behind docs/experiments.md: they read finished runs of training; not part of the product."""
