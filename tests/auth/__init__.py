"""Tests of the auth plugin, the GitHub provider and the authorisation policy."""
