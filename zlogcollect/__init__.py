"""zlogcollect: brokerless central logging for Python apps over ZeroMQ."""

__version__ = "0.1.0"
