"""
Typed, frozen configuration for the gateway and the microservice, loaded
from YAML and validated before anything starts.
"""

from .errors import ConfigError
from .gateway import GatewayConfig, load_gateway_config
from .microservice import MicroserviceConfig, load_microservice_config

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "MicroserviceConfig",
    "load_gateway_config",
    "load_microservice_config",
]
