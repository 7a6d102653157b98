"""Reconcile loops that make recorded desired state true: scheduling, task life cycle, accounting."""
