"""AMQP (RabbitMQ) connectors: the ``amqp`` source consumes queues bound to an exchange,
acking only after every sink wrote a batch. Needs the ``amqp`` extra (aio-pika).

Not registered yet: a connector joins the registry with its conformance harness
(``tests/conformance/amqp.py`` exists but has not been run, and reconnecting after the broker
closes the connection still fails: see the xfail in tests/integration/test_amqp_source.py).
"""

CONNECTORS: dict[str, str] = {}
