"""Models subpackage."""
