"""raydet's tests, a package: test modules are named by their folder (``tests.models.test_parity``), and
Ray workers import the test objects they are sent by name (``tests/conftest.py`` puts the checkout on the
session's Ray nodes' ``PYTHONPATH``)."""
