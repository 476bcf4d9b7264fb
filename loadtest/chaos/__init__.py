"""The fault-injection soak (``python -m loadtest chaos``): steady traffic on every wire path
while workers are killed and stopped, versions published good, corrupt and slowly, and abusive
requests sent; it reports wrong answers, failures by cause, latency, memory and descriptors.

``soak`` runs it; ``traffic`` is the checked load; ``faults`` the seeded injector; ``report`` the
verdict and its report. It builds on the client library and ``loadtest.server``, never on the
other harnesses.
"""
