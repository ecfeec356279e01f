"""Test support: shared events, handler loading and a fake Lambda context."""
