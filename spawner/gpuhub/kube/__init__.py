"""Kubernetes adapters: pure manifest pieces (``labels``, ``objects``, ``nodes``), the
shared watch cache (``informer``) and the ledger backend over it (``ledger``)."""
