"""Features subpackage."""
