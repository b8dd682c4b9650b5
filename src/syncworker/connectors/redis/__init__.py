"""Redis connectors: plain lists (``redis_list``) and streams with consumer groups
(``redis_stream``) as sources, one key per record with per-group index sets (``redis``) as a
sink. Needs the ``redis`` extra (redis-py with hiredis)."""

CONNECTORS = {
    "source:redis_list": "syncworker.connectors.redis.source_list:RedisListSource",
    "source:redis_stream": "syncworker.connectors.redis.source_stream:RedisStreamSource",
    "sink:redis": "syncworker.connectors.redis.sink:RedisSink",
}
