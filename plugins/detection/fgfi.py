"""Placeholder: being written (issue 3)."""


def register(registry):
    """Register this module's components with the plugin's registrar."""
