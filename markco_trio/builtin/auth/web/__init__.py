"""The auth plugin's routes: request authentication, login pages, invite pages, the API."""
