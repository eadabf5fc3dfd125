"""Fake of `deephaven_core.proto.config_pb2`."""


class ConfigurationConstantsRequest:
    """The empty request of `ConfigService.GetConfigurationConstants`."""
