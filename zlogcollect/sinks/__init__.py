"""Where records go once routed: files (and, with the amqp extra, RabbitMQ)."""
