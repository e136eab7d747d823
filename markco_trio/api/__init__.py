"""The API app: quart-trio behind the front door, on a unix socket (never loopback TCP)."""
