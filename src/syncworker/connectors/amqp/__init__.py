"""AMQP (RabbitMQ) connectors: the ``amqp`` source consumes queues bound to an exchange,
acking only after every sink wrote a batch. Needs the ``amqp`` extra (aio-pika)."""

CONNECTORS = {
    "source:amqp": "syncworker.connectors.amqp.source:AmqpSource",
}
