"""markco: self-hosted personal notebook computing, as one trio daemon.

The public face of the plugin contract. Plugin authors import from here:

    from markco_trio import hookimpl, ProviderSpec, ConfigSection, ServiceSpec

The mechanism lives in the modules named for it (`hookspecs`, `roles`, `plugins`, `config`,
`daemon`, `proxy`, `api`, `storage`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .authz import Action, Principal, Resource
from .hookspecs import CliCommand, ConfigSection, ProviderSpec, hookimpl
from .options import Secret
from .roles import EventObserver, ServiceSpec

__all__ = [
    "Action",
    "CliCommand",
    "ConfigSection",
    "EventObserver",
    "Principal",
    "ProviderSpec",
    "Resource",
    "Secret",
    "ServiceSpec",
    "__version__",
    "hookimpl",
]
