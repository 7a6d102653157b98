"""Reconcile loops that make recorded desired state true.

Scheduling admits and places work; the life cycle starts, observes and ends
tasks and records their usage.
"""
