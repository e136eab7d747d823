"""Test kits for plugin authors: contract tests per role and throw-away services to run them on."""
