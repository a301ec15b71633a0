"""app3 of the seed article: logs every level through zlogcollect's handler (--stock: pyzmq's PUBHandler)."""

from seed_app import EVERY_LEVEL, main

if __name__ == "__main__":
    main("app3", EVERY_LEVEL)
