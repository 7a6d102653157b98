"""Request and response models of the REST API (``*Create`` in, ``*Out`` out), with limits."""
