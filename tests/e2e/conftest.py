"""End-to-end tests run against the real-process fixtures of ``tests/procs.py`` (``embedded_service``,
``production_service`` and ``svc``, parametrized over both), registered for the whole suite by
``tests/conftest.py`` so that the fault tests share the same running services."""
