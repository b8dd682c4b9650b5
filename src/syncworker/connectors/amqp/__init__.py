"""AMQP (RabbitMQ) connectors: the ``amqp`` source consumes queues bound to an exchange,
acking only after every sink wrote a batch, and reconnects by itself after the broker closes
the connection or restarts. Needs the ``amqp`` extra (aio-pika).

Its conformance harness is ``tests/conformance/amqp.py`` (the shared broker, and a private
RabbitMQ node for the restart and password cases).
"""

CONNECTORS = {
    "source:amqp": "syncworker.connectors.amqp.source:AmqpSource",
}
