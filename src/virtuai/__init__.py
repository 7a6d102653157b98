"""virtuai: a self-hosted AI-on-demand platform.

Layers, from the pure centre to the edges (enforced by import-linter):
``domain`` <- ``scheduler`` <- ``store`` / ``drivers`` / ``auth`` <- ``services`` /
``control`` <- ``api`` <- ``server`` <- ``cli``.
"""

__version__ = "0.1.0"
