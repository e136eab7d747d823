"""The built-in plugins: registered through the same hooks as third-party ones, so each can be
disabled (`[plugins] disable`) and replaced."""
