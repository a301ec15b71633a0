"""Helpers to run a real collector and a private RabbitMQ node, used by this project's tests and
benchmarks and usable by apps' own integration tests.

- :mod:`zlogcollect.testing.process`: ``wait_until``, free endpoints, scratch directories, a child
  process whose output is read line by line (:class:`Child`) and a real ``zlogcollect`` daemon
  (:class:`Collector`: its ready line, signals, exit status and counters read from its stats JSON).
- :mod:`zlogcollect.testing.rabbitmq`: :class:`RabbitNode`, a throw-away RabbitMQ node (Debian's
  ``rabbitmq-server``) in a temp dir on private ports, started and stopped without systemd.

Nothing here is imported by ``import zlogcollect``; import the submodules themselves. They need only
the standard library (no pytest): a test framework's own glue (skip or fail) stays with the caller.
"""
