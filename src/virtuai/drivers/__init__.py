"""Where work runs.

Every driver fulfils ``drivers.base.Driver``; drivers never import each other.
"""
